//! The conversion steps a mapping file can apply to a value (`convert="..."`), and the lookup
//! tables they use.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use super::time::Timestamp;
use super::value::{JsonVal, Val};
use crate::json::{Json, Text};

/// A lookup table from a mapping file.
#[derive(Debug)]
pub struct LookupTable {
    pub id: String,
    pub entries: super::family::FxMap<String, String>,
    pub case_insensitive: bool,
    pub default: Option<String>,
    /// A key with no entry and no default keeps its own value instead of becoming absent.
    pub keep_unmatched: bool,
}

impl LookupTable {
    fn get(&self, key: &str) -> Option<&str> {
        let hit = if self.case_insensitive {
            self.entries.get(&key.to_lowercase())
        } else {
            self.entries.get(key)
        };
        hit.or(self.default.as_ref()).map(String::as_str)
    }
}

/// One conversion step of a field's `convert` list, applied left to right.
#[derive(Debug, Clone)]
pub enum Step {
    String,
    Int,
    Float,
    Bool,
    Timestamp,
    Ip,
    Lowercase,
    Uppercase,
    Trim,
    Json,
    SnakeKeys,
    Args,
    Count,
    First,
    List,
    Unique,
    Basename,
    Dirname,
    /// What follows the last `.` of a file name (ECS `file.extension`).
    Extension,
    /// The hive a Windows registry path starts with (`HKEY_LOCAL_MACHINE`, `HKLM`).
    RegistryHive,
    /// A Windows registry path without its hive (ECS `registry.key`).
    RegistryKey,
    Url,
    Split(String),
    Join(String),
    /// Every `from` replaced by `to`.
    Replace(String, String),
    /// A MAC address in ECS form: six upper-case hex pairs joined by `-`.
    Mac,
    /// A User-Agent header parsed into ECS `user_agent` (name, version, os, device, original).
    UserAgent,
    Lookup(Arc<LookupTable>),
    /// `args count` fused at compile time: counts the words without building the list.
    ArgCount,
}

/// The step names a mapping file may use, for diagnostics and the authors' README.
pub const STEP_NAMES: &[&str] = &[
    "string",
    "int",
    "float",
    "bool",
    "timestamp",
    "ip",
    "lowercase",
    "uppercase",
    "trim",
    "json",
    "snake-keys",
    "args",
    "count",
    "first",
    "list",
    "unique",
    "basename",
    "dirname",
    "extension",
    "registry-hive",
    "registry-key",
    "url",
    "mac",
    "user-agent",
    "replace:FROM:TO",
    "split:SEP",
    "join:SEP",
    "lookup:TABLE",
];

/// Rewrites step sequences that have a cheaper equivalent.
pub fn fuse(steps: Vec<Step>) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    for s in steps {
        match (out.last(), &s) {
            (Some(Step::Args), Step::Count) => {
                out.pop();
                out.push(Step::ArgCount);
            }
            _ => out.push(s),
        }
    }
    out
}

impl Step {
    /// Parses a step name; `lookup` tables are resolved by the caller.
    pub fn parse(
        word: &str,
        table: impl Fn(&str) -> Option<Arc<LookupTable>>,
    ) -> Result<Step, String> {
        let (name, arg) = match word.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (word, None),
        };
        let sep = |a: Option<&str>| -> Result<String, String> {
            match a {
                Some("space") => Ok(" ".into()),
                Some("tab") => Ok("\t".into()),
                Some(s) if !s.is_empty() => Ok(s.to_string()),
                _ => Err(format!(
                    "`{name}` needs a separator, as in `{name}:;` or `{name}:space`"
                )),
            }
        };
        Ok(match name {
            "string" => Step::String,
            "int" => Step::Int,
            "float" => Step::Float,
            "bool" => Step::Bool,
            "timestamp" => Step::Timestamp,
            "ip" => Step::Ip,
            "lowercase" => Step::Lowercase,
            "uppercase" => Step::Uppercase,
            "trim" => Step::Trim,
            "json" => Step::Json,
            "snake-keys" => Step::SnakeKeys,
            "args" => Step::Args,
            "count" => Step::Count,
            "first" => Step::First,
            "list" => Step::List,
            "unique" => Step::Unique,
            "basename" => Step::Basename,
            "extension" => Step::Extension,
            "registry-hive" => Step::RegistryHive,
            "registry-key" => Step::RegistryKey,
            "dirname" => Step::Dirname,
            "url" => Step::Url,
            "mac" => Step::Mac,
            "user-agent" => Step::UserAgent,
            "replace" => {
                let (from, to) = arg
                    .and_then(|a| a.split_once(':'))
                    .ok_or("`replace` needs FROM:TO, as in `replace:space:-`")?;
                let word = |w: &str| match w {
                    "space" => " ".to_string(),
                    "tab" => "\t".to_string(),
                    other => other.to_string(),
                };
                if from.is_empty() {
                    return Err("`replace` needs a non-empty FROM".into());
                }
                Step::Replace(word(from), word(to))
            }
            "split" => Step::Split(sep(arg)?),
            "join" => Step::Join(sep(arg)?),
            "lookup" => {
                let id = arg.ok_or("`lookup` needs a table id, as in `lookup:severity`")?;
                Step::Lookup(table(id).ok_or_else(|| {
                    format!("no lookup table `{id}` in this family or the sets it includes")
                })?)
            }
            _ => {
                return Err(format!(
                    "unknown conversion `{word}` (known: {})",
                    STEP_NAMES.join(", ")
                ))
            }
        })
    }

    /// Applies the step. `Ok(None)` means the value became absent (e.g. `-` as an IP).
    pub fn apply<'a>(&self, v: Val<'a>) -> Result<Option<Val<'a>>, String> {
        match self {
            Step::ArgCount => Ok(match &v {
                Val::Str(s) if !s.contains('"') => {
                    Some(Val::Int(s.split_whitespace().count() as i64))
                }
                Val::Str(s) => Some(Val::Int(command_line_args(s).len() as i64)),
                _ => Step::Count.apply(v)?,
            }),
            Step::Count => Ok(Some(Val::Int(match &v {
                Val::List(l) => l.len() as i64,
                Val::Json(j) => j.as_array().map_or(1, |a| a.len() as i64),
                _ => 1,
            }))),
            Step::First => Ok(match v {
                Val::List(l) => l.into_iter().next(),
                Val::Json(JsonVal::Borrowed(Json::Array(a))) => a.first().and_then(Val::from_json),
                Val::Json(JsonVal::Owned(Json::Array(a))) => {
                    a.into_iter().next().and_then(Val::from_owned_json)
                }
                other => Some(other),
            }),
            Step::List => Ok(Some(match v {
                Val::List(l) => Val::List(l),
                other => Val::List(vec![other]),
            })),
            Step::Unique => Ok(Some(match v {
                Val::List(l) => {
                    let mut out: Vec<Val> = Vec::with_capacity(l.len());
                    for x in l {
                        if !out.contains(&x) {
                            out.push(x);
                        }
                    }
                    Val::List(out)
                }
                other => other,
            })),
            Step::Join(sep) => Ok(Some(match v {
                Val::List(l) => {
                    let parts: Vec<_> = l.iter().map(|x| x.to_text().into_owned()).collect();
                    Val::Str(Text::from(parts.join(sep)))
                }
                other => other,
            })),
            Step::Split(sep) => Ok(match v {
                Val::Str(s) => pieces(s, Some(sep)),
                other => Some(other),
            }),
            Step::Args => Ok(match v {
                Val::Str(s) => pieces(s, None),
                other => Some(other),
            }),
            _ => match v {
                Val::List(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        if let Some(x) = self.scalar(item)? {
                            out.push(x);
                        }
                    }
                    Ok((!out.is_empty()).then_some(Val::List(out)))
                }
                other => self.scalar(other),
            },
        }
    }

    fn scalar<'a>(&self, v: Val<'a>) -> Result<Option<Val<'a>>, String> {
        let text_of = |v: &Val| v.to_text().into_owned();
        Ok(Some(match self {
            Step::String => match v {
                Val::Str(s) => Val::Str(s),
                other => Val::Str(Text::from(text_of(&other))),
            },
            Step::Int => match v {
                Val::Int(_) | Val::UInt(_) => v,
                Val::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Val::Int(f as i64),
                Val::Bool(b) => Val::Int(i64::from(b)),
                Val::Str(ref s) => {
                    let t = s.trim();
                    match t.parse::<i64>() {
                        Ok(i) => Val::Int(i),
                        Err(_) => match t.parse::<u64>() {
                            Ok(u) => Val::UInt(u),
                            Err(_) => return Err(not_a(t, "an integer")),
                        },
                    }
                }
                other => return Err(not_a(&other.to_text(), "an integer")),
            },
            Step::Float => match v {
                Val::Int(i) => Val::Float(i as f64),
                Val::UInt(u) => Val::Float(u as f64),
                Val::Float(_) => v,
                Val::Str(ref s) => {
                    Val::Float(s.trim().parse::<f64>().map_err(|_| not_a(s, "a number"))?)
                }
                other => return Err(not_a(&other.to_text(), "a number")),
            },
            Step::Bool => match v {
                Val::Bool(_) => v,
                Val::Int(0) | Val::UInt(0) => Val::Bool(false),
                Val::Int(1) | Val::UInt(1) => Val::Bool(true),
                Val::Str(ref s) => match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => Val::Bool(true),
                    "false" | "0" | "no" => Val::Bool(false),
                    _ => return Err(not_a(s, "a boolean")),
                },
                other => return Err(not_a(&other.to_text(), "a boolean")),
            },
            Step::Timestamp => match v {
                Val::Time(_) => v,
                Val::Str(ref s) => {
                    Val::Time(Timestamp::parse(s).ok_or_else(|| not_a(s, "a timestamp"))?)
                }
                other => return Err(not_a(&other.to_text(), "a timestamp")),
            },
            Step::Ip => {
                let text = v.to_text();
                let t = text.trim().trim_start_matches('[').trim_end_matches(']');
                if t == "-" || t.is_empty() {
                    return Ok(None);
                }
                // The standard parser accepts only the canonical dotted-quad for IPv4, so only
                // IPv6 (case, zero runs) can need rewriting.
                let canonical = match t.parse::<IpAddr>() {
                    Ok(IpAddr::V4(_)) if t.len() == text.len() => None,
                    Ok(ip) => Some(ip.to_string()).filter(|c| *c != *text),
                    Err(_) => return Err(not_a(&text, "an IP address")),
                };
                match canonical {
                    Some(c) => Val::Str(Text::from(c)),
                    None if t.len() == text.len() => v,
                    None => Val::Str(Text::from(t.to_string())),
                }
            }
            Step::Lowercase => map_text(v, |t| {
                (t.bytes().any(|b| b.is_ascii_uppercase()) || !t.is_ascii()).then(|| t.lowercased())
            }),
            Step::Uppercase => map_text(v, |t| {
                (t.bytes().any(|b| b.is_ascii_lowercase()) || !t.is_ascii()).then(|| t.uppercased())
            }),
            Step::Trim => {
                let trimmed = map_text(v, |t| {
                    let kept = t.trim();
                    let start = kept.as_ptr() as usize - t.as_ptr() as usize;
                    (kept.len() != t.len()).then(|| t.sub(start..start + kept.len()))
                });
                if trimmed.as_str() == Some("") {
                    return Ok(None);
                }
                trimmed
            }
            Step::Json => match v {
                Val::Str(ref s) => match Json::parse_owned(s) {
                    Some(parsed) => return Ok(Val::from_owned_json(parsed)),
                    None => v,
                },
                other => other,
            },
            Step::SnakeKeys => match v {
                Val::Json(j) => Val::Json(JsonVal::Owned(snake_keys(&j))),
                other => other,
            },
            Step::Basename => map_text(v, |t| t.rfind(['\\', '/']).map(|i| t.sub(i + 1..t.len()))),
            // The regex `\.([^.\\/]+)$` said the same, at ~3,600 instructions a record.
            Step::Extension => match part_of(v, |s| {
                let at = s.rfind('.')? + 1;
                (at < s.len() && !s[at..].contains(['\\', '/'])).then_some(at..s.len())
            }) {
                Some(x) => x,
                None => return Ok(None),
            },
            Step::RegistryHive | Step::RegistryKey => match part_of(v, |s| {
                let (hive, key) = registry_split(s)?;
                match self {
                    Step::RegistryHive => Some(0..hive.len()),
                    _ if key.is_empty() || key.contains('\n') => None,
                    _ => Some(hive.len() + 1..s.len()),
                }
            }) {
                Some(x) => x,
                None => return Ok(None),
            },
            Step::Dirname => match v {
                Val::Str(ref s) => match s.rfind(['\\', '/']) {
                    Some(0) => Val::Str(Text::from(s[..1].to_string())),
                    Some(i) => Val::Str(Text::from(s[..i].to_string())),
                    None => return Ok(None),
                },
                other => other,
            },
            Step::Replace(from, to) => map_str(v, |s| {
                s.contains(from.as_str())
                    .then(|| s.replace(from.as_str(), to))
            }),
            Step::Mac => {
                let text = v.to_text();
                let hex: Vec<u8> = text
                    .bytes()
                    .filter(|b| !matches!(b, b':' | b'-' | b'.'))
                    .collect();
                if hex.len() != 12 || !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(not_a(&text, "a MAC address"));
                }
                let pairs: Vec<String> = hex
                    .chunks(2)
                    .map(|p| String::from_utf8_lossy(p).to_ascii_uppercase())
                    .collect();
                Val::Str(Text::from(pairs.join("-")))
            }
            Step::UserAgent => {
                let text = v.to_text();
                if text.trim().is_empty() {
                    return Ok(None);
                }
                Val::Json(JsonVal::Owned(user_agent(&text)))
            }
            Step::Url => match v {
                Val::Str(ref s) => match url_parts(s) {
                    Some(obj) => Val::Json(JsonVal::Owned(obj)),
                    None => return Err(not_a(s, "a URL")),
                },
                other => other,
            },
            Step::Lookup(table) => match table.get(&v.to_text()) {
                Some(hit) if !hit.is_empty() => Val::Str(Text::from(hit.to_string())),
                Some(_) => return Ok(None),
                None if table.keep_unmatched => v,
                None => return Ok(None),
            },
            Step::Count
            | Step::First
            | Step::List
            | Step::Unique
            | Step::Join(_)
            | Step::Split(_)
            | Step::Args
            | Step::ArgCount => v,
        }))
    }
}

/// The error of a value a conversion cannot take. Cold and out of line: conversions run for
/// every field, and the formatting would otherwise sit in their hot code.
#[cold]
#[inline(never)]
fn not_a(text: &str, what: &str) -> String {
    format!("`{text}` is not {what}")
}

/// The part of a value's text that `find` says, borrowed from the record when the text is.
fn part_of<'a>(
    v: Val<'a>,
    find: impl FnOnce(&str) -> Option<std::ops::Range<usize>>,
) -> Option<Val<'a>> {
    let s = match v {
        Val::Str(s) => s,
        other => Text::from(other.to_text().into_owned()),
    };
    let range = find(&s)?;
    Some(Val::Str(s.sub(range)))
}

/// A registry path's hive and the rest after its `\`, when it starts with one: `HKEY_` and
/// capitals or underscores, or `HK` and two capitals. (The regexes these conversions replaced,
/// `^(?:HKEY_[A-Z_]+|HK[A-Z]{2})\\(.+)$`, cost ~3,600 instructions per record each.)
fn registry_split(s: &str) -> Option<(&str, &str)> {
    let (hive, key) = s.split_once('\\')?;
    let b = hive.as_bytes();
    let long = b.len() > 5
        && hive.starts_with("HKEY_")
        && b.iter().all(|c| c.is_ascii_uppercase() || *c == b'_');
    let short = b.len() == 4 && hive.starts_with("HK") && b[2..].iter().all(u8::is_ascii_uppercase);
    (long || short).then_some((hive, key))
}

/// Splits a string into list items (on `sep`, trimmed, or on whitespace), borrowing from the
/// record when the string does.
fn pieces<'a>(s: Text<'a>, sep: Option<&str>) -> Option<Val<'a>> {
    let items: Vec<Val<'a>> = match sep {
        Some(sep) => match s.borrowed() {
            Some(b) => b
                .split(sep)
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| Val::Str(s.part(p)))
                .collect(),
            None => s
                .split(sep)
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| Val::Str(Text::from(p.to_string())))
                .collect(),
        },
        // Without quotes the words borrow from the record; quoted command lines need the
        // Windows rules, which rewrite the text.
        None if !s.contains('"') => match s.borrowed() {
            Some(b) => b.split_whitespace().map(|p| Val::Str(s.part(p))).collect(),
            None => s
                .split_whitespace()
                .map(|p| Val::Str(Text::from(p.to_string())))
                .collect(),
        },
        None => match s.borrowed() {
            Some(line) => command_line_args(line)
                .into_iter()
                .map(|a| {
                    Val::Str(match a {
                        Cow::Borrowed(p) => s.part(p),
                        Cow::Owned(o) => Text::from(o),
                    })
                })
                .collect(),
            None => command_line_args(&s)
                .into_iter()
                .map(|a| Val::Str(Text::from(a.into_owned())))
                .collect(),
        },
    };
    (!items.is_empty()).then_some(Val::List(items))
}

/// A command line split as Windows' CommandLineToArgvW does: whitespace separates arguments
/// outside double quotes, quotes group and are dropped, `\"` is a literal quote, and a run of
/// backslashes before a quote is halved. Arguments without quotes borrow from the line.
pub fn command_line_args(line: &str) -> Vec<Cow<'_, str>> {
    let b = line.as_bytes();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            return args;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'"' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'"' {
            args.push(Cow::Borrowed(&line[start..i]));
            continue;
        }
        let (arg, end) = quoted_arg(b, start);
        args.push(Cow::Owned(arg));
        i = end;
    }
}

/// One argument that holds quotes, from `start`; returns it and where it ends. Only the ASCII
/// bytes `"` and `\` are dropped, so the bytes kept stay valid UTF-8.
fn quoted_arg(b: &[u8], start: usize) -> (String, usize) {
    let mut out: Vec<u8> = Vec::with_capacity(b.len() - start);
    let mut in_quotes = false;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let run = b[i..].iter().take_while(|&&c| c == b'\\').count();
                i += run;
                if b.get(i) == Some(&b'"') {
                    out.extend(std::iter::repeat_n(b'\\', run / 2));
                    if run % 2 == 1 {
                        out.push(b'"');
                        i += 1;
                    }
                } else {
                    out.extend(std::iter::repeat_n(b'\\', run));
                }
            }
            b'"' => {
                in_quotes = !in_quotes;
                i += 1;
            }
            c if c.is_ascii_whitespace() && !in_quotes => break,
            _ => {
                let run = b[i..]
                    .iter()
                    .take_while(|&&c| {
                        c != b'\\' && c != b'"' && (in_quotes || !c.is_ascii_whitespace())
                    })
                    .count();
                out.extend_from_slice(&b[i..i + run]);
                i += run;
            }
        }
    }
    let text = String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    (text, i)
}

/// `v` with its text replaced by what `f` gives, when it gives something.
fn map_text<'a>(v: Val<'a>, f: impl FnOnce(&Text<'a>) -> Option<Text<'a>>) -> Val<'a> {
    match v {
        Val::Str(t) => Val::Str(f(&t).unwrap_or(t)),
        other => other,
    }
}

fn map_str<'a>(v: Val<'a>, f: impl FnOnce(&str) -> Option<String>) -> Val<'a> {
    match v {
        Val::Str(s) => match f(&s) {
            Some(changed) => Val::Str(Text::from(changed)),
            None => Val::Str(s),
        },
        other => other,
    }
}

/// `InitiatingProcessId` -> `initiating_process_id`; `SHA1` -> `sha1`; `ISP` -> `isp`.
pub fn snake_case(s: &str) -> String {
    if !s.is_ascii() {
        return snake_case_chars(s);
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len() + 6);
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| b[j]);
            let next = b.get(i + 1).copied();
            let boundary = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.push(char::from(c.to_ascii_lowercase()));
        } else if matches!(c, b'-' | b' ' | b'.') {
            out.push('_');
        } else {
            out.push(char::from(c));
        }
    }
    datetime_suffix(out)
}

/// The general form of [`snake_case`], for names with non-ASCII letters. Column names are ASCII
/// and this runs for every unknown column of every record, so the byte version above avoids the
/// per-call `Vec<char>`.
fn snake_case_chars(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_uppercase() => next.is_some_and(char::is_lowercase),
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else if c == '-' || c == ' ' || c == '.' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    datetime_suffix(out)
}

/// Graph's `createdDateTime` is `created_datetime` in Elastic's layout, not `created_date_time`.
fn datetime_suffix(out: String) -> String {
    if out.contains("_date_time") {
        out.replace("_date_time", "_datetime")
    } else {
        out
    }
}

fn snake_keys(v: &Json) -> Json<'static> {
    match v {
        Json::Object(o) => Json::Object(
            o.iter()
                .filter(|(k, _)| !k.starts_with("@odata"))
                .map(|(k, x)| (Cow::Owned(snake_case(k)), snake_keys(x)))
                .collect(),
        ),
        Json::Array(a) => Json::Array(a.iter().map(snake_keys).collect()),
        other => other.clone().into_owned(),
    }
}

/// Splits a URL into the ECS `url.*` parts (original, scheme, domain, port, path, query, fragment).
/// ECS `user_agent` in the shape Elastic's ingest pipeline (uap-core) gives: an unknown browser
/// is named `Other`, as is a desktop device; the OS split into name, version and full name.
/// Parsed with woothee (uap-core's rules are a 300 KB YAML file and a regex set too slow for a
/// per-record step).
fn user_agent(ua: &str) -> Json<'static> {
    let known = |s: &str| (!s.is_empty() && s != "UNKNOWN").then(|| s.to_string());
    let text = |s: String| Json::Str(s.into());
    let mut members: Vec<(Cow<'static, str>, Json<'static>)> = Vec::with_capacity(5);
    members.push((Cow::Borrowed("original"), text(ua.to_string())));
    let Some(r) = woothee::parser::Parser::new().parse(ua) else {
        members.push((Cow::Borrowed("name"), text("Other".into())));
        return Json::Object(members);
    };
    members.push((
        Cow::Borrowed("name"),
        text(known(r.name).unwrap_or_else(|| "Other".into())),
    ));
    if let Some(v) = known(r.version) {
        members.push((Cow::Borrowed("version"), text(v)));
    }
    let os_version = known(&r.os_version);
    let (os_name, os_version) = match r.os {
        "Mac OSX" => (Some("Mac OS X".to_string()), os_version),
        "iPhone" | "iPad" | "iPod" => (Some("iOS".to_string()), os_version),
        os => match os.strip_prefix("Windows ") {
            // Windows' version is in the name ("Windows 10"); os_version is the NT kernel's.
            Some(v) => (Some("Windows".to_string()), Some(v.to_string())),
            None => (known(os), os_version),
        },
    };
    if let Some(name) = os_name {
        let mut os = vec![(Cow::Borrowed("name"), text(name.clone()))];
        let full = match &os_version {
            Some(v) => {
                os.push((Cow::Borrowed("version"), text(v.clone())));
                format!("{name} {v}")
            }
            None => name,
        };
        os.push((Cow::Borrowed("full"), text(full)));
        members.push((Cow::Borrowed("os"), Json::Object(os)));
    }
    let device = match (r.category, r.os) {
        ("smartphone" | "mobilephone", "iPhone" | "iPad" | "iPod") => r.os.to_string(),
        ("smartphone" | "mobilephone", _) => "Generic Smartphone".to_string(),
        _ => "Other".to_string(),
    };
    members.push((
        Cow::Borrowed("device"),
        Json::Object(vec![(Cow::Borrowed("name"), text(device))]),
    ));
    Json::Object(members)
}

fn url_parts(s: &str) -> Option<Json<'static>> {
    let (scheme, rest) = s.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (user_info, host_port) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (domain, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(port) => (h, Some(port)),
            Err(_) => (host_port, None),
        },
        _ => (host_port, None),
    };
    let text = |x: &str| Json::Str(x.to_string().into());
    let mut members: Vec<(Cow<'static, str>, Json<'static>)> = Vec::with_capacity(11);
    let mut put = |k: &'static str, v: Json<'static>| members.push((Cow::Borrowed(k), v));
    put("original", text(s));
    put("scheme", text(scheme));
    if !domain.is_empty() {
        put(
            "domain",
            text(domain.trim_start_matches('[').trim_end_matches(']')),
        );
    }
    if let Some(p) = port {
        put("port", Json::Int(i64::from(p)));
    }
    if !path.is_empty() {
        put("path", text(path));
        let last = &path[path.rfind('/').map_or(0, |i| i + 1)..];
        if let Some((_, ext)) = last.rsplit_once('.').filter(|(_, e)| !e.is_empty()) {
            put("extension", text(ext));
        }
    }
    if let Some(u) = user_info.filter(|u| !u.is_empty()) {
        put("user_info", text(u));
        let (name, password) = u.split_once(':').map_or((u, None), |(n, p)| (n, Some(p)));
        if !name.is_empty() {
            put("username", text(name));
        }
        if let Some(p) = password.filter(|p| !p.is_empty()) {
            put("password", text(p));
        }
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        put("query", text(q));
    }
    if let Some(f) = fragment.filter(|f| !f.is_empty()) {
        put("fragment", text(f));
    }
    members.sort_by(|a, b| a.0.cmp(&b.0));
    Some(Json::Object(members))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Val<'static> {
        Val::Str(Text::from(x.to_string()))
    }

    fn run(step: Step, v: Val<'static>) -> Result<Option<Val<'static>>, String> {
        step.apply(v)
    }

    #[test]
    fn extension_says_what_the_regex_it_replaced_said() {
        let re = regex::Regex::new(r"\.([^.\\/]+)$").unwrap();
        for name in [
            "a.exe",
            "A.DLL",
            "archive.tar.gz",
            "noext",
            "trailing.",
            ".profile",
            "..",
            "",
            r"C:\dir.d\file",
            r"C:\dir\file.txt",
            "dir.d/file",
            "x.y/z.w",
            "é.ünï",
        ] {
            let expected = re
                .captures(name)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str().to_string());
            let got = run(Step::Extension, s(name)).unwrap();
            assert_eq!(
                got.as_ref().and_then(Val::as_str),
                expected.as_deref(),
                "{name:?}"
            );
            let borrowed = Step::Extension.apply(Val::Str(Text::from(name))).unwrap();
            assert_eq!(borrowed, got, "{name:?}");
        }
    }

    #[test]
    fn registry_conversions_say_what_the_regexes_they_replaced_said() {
        let key_re = regex::Regex::new(r"^(?:HKEY_[A-Z_]+|HK[A-Z]{2})\\(.+)$").unwrap();
        let hive_re = regex::Regex::new(r"^(HKEY_[A-Z_]+|HK[A-Z]{2})\\").unwrap();
        for path in [
            r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft",
            r"HKLM\SYSTEM\CurrentControlSet",
            r"HKEY\x",
            r"HKEY_\x",
            r"HKEY_A_B",
            r"HKCU\",
            r"HKU\S-1-5",
            r"hklm\software",
            r"HKEY_CURRENT_USER\a\nb",
            r"HKEY_USERS\S-1-5-21\Software\Classes",
            r"\Registry\Machine\Software",
            "",
            "HKCR\\",
            "HKEY_LOCAL_MACHINE\\é\\ü",
            "HKEY_CURRENT_USER\\line\nbreak",
        ] {
            for (step, re) in [(Step::RegistryKey, &key_re), (Step::RegistryHive, &hive_re)] {
                let expected = re
                    .captures(path)
                    .and_then(|c| c.get(1))
                    .map(|m| m.as_str().to_string());
                let got = step.apply(Val::Str(Text::from(path))).unwrap();
                assert_eq!(
                    got.as_ref().and_then(Val::as_str),
                    expected.as_deref(),
                    "{step:?} {path:?}"
                );
                assert_eq!(run(step.clone(), s(path)).unwrap(), got, "{path:?}");
            }
        }
    }

    #[test]
    fn command_lines_split_as_windows_does() {
        assert_eq!(
            command_line_args(r#""C:\Program Files\a.exe" /u "x y" plain"#),
            ["C:\\Program Files\\a.exe", "/u", "x y", "plain"]
        );
        assert_eq!(
            command_line_args(r#"a\"b c\\"d e" f"#),
            [r#"a"b"#, r#"c\d e"#, "f"]
        );
        assert_eq!(command_line_args(r#"x "" y"#), ["x", "", "y"]);
        assert_eq!(command_line_args(r"C:\dir\ a"), [r"C:\dir\", "a"]);
        assert_eq!(
            run(Step::ArgCount, s(r#""C:\Program Files\a.exe" /u"#)).unwrap(),
            Some(Val::Int(2))
        );
    }

    #[test]
    fn user_agents_as_elastic_names_them() {
        let chrome = user_agent("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.124 Safari/537.36");
        assert_eq!(
            chrome.to_string(),
            r#"{"original":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.124 Safari/537.36","name":"Chrome","version":"91.0.4472.124","os":{"name":"Windows","version":"10","full":"Windows 10"},"device":{"name":"Other"}}"#
        );
        let bare = user_agent("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36");
        assert_eq!(bare.get("name").and_then(Json::as_str), Some("Other"));
        assert_eq!(bare.get("version"), None);
        let iphone = user_agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1");
        assert_eq!(
            iphone
                .get("os")
                .and_then(|o| o.get("full"))
                .and_then(Json::as_str),
            Some("iOS 17.5")
        );
        assert_eq!(
            iphone
                .get("device")
                .and_then(|d| d.get("name"))
                .and_then(Json::as_str),
            Some("iPhone")
        );
        assert_eq!(
            run(Step::UserAgent, s("  ")).unwrap(),
            None,
            "an empty header is no value"
        );
    }

    #[test]
    fn lenient_scalars() {
        assert_eq!(run(Step::Int, s(" 42 ")).unwrap(), Some(Val::Int(42)));
        assert_eq!(
            run(Step::Int, s("18446744073709551615")).unwrap(),
            Some(Val::UInt(u64::MAX))
        );
        assert!(run(Step::Int, s("4x")).is_err());
        assert_eq!(run(Step::Bool, s("0")).unwrap(), Some(Val::Bool(false)));
        assert_eq!(run(Step::Bool, Val::Int(1)).unwrap(), Some(Val::Bool(true)));
        assert_eq!(run(Step::String, Val::Int(2833)).unwrap(), Some(s("2833")));
        assert_eq!(run(Step::Ip, s("-")).unwrap(), None);
        assert_eq!(
            run(Step::Ip, s("::FFFF:10.0.0.1")).unwrap(),
            Some(s("::ffff:10.0.0.1"))
        );
        assert!(run(Step::Ip, s("10.0.0.300")).is_err());
    }

    #[test]
    fn list_steps() {
        let args = run(Step::Args, s("svchost.exe -k  DcomLaunch"))
            .unwrap()
            .unwrap();
        assert_eq!(
            args,
            Val::List(vec![s("svchost.exe"), s("-k"), s("DcomLaunch")])
        );
        assert_eq!(run(Step::Count, args.clone()).unwrap(), Some(Val::Int(3)));
        assert_eq!(run(Step::First, args).unwrap(), Some(s("svchost.exe")));
        let split = run(Step::Split(";".into()), s("a; b;;c")).unwrap().unwrap();
        assert_eq!(split, Val::List(vec![s("a"), s("b"), s("c")]));
        let lower = run(Step::Lowercase, split).unwrap().unwrap();
        assert_eq!(lower, Val::List(vec![s("a"), s("b"), s("c")]));
    }

    #[test]
    fn names_paths_and_urls() {
        assert_eq!(
            snake_case("InitiatingProcessAccountSid"),
            "initiating_process_account_sid"
        );
        assert_eq!(snake_case("SHA1"), "sha1");
        assert_eq!(snake_case("ISP"), "isp");
        assert_eq!(snake_case("IPAddress"), "ip_address");
        assert_eq!(snake_case("mdeDeviceId"), "mde_device_id");
        assert_eq!(snake_case("createdDateTime"), "created_datetime");
        assert_eq!(snake_case("ÄrgerÜber"), "ärger_über");
        assert_eq!(
            run(Step::Basename, s(r"C:\a\b.exe")).unwrap(),
            Some(s("b.exe"))
        );
        assert_eq!(
            run(Step::Dirname, s("/usr/bin/ls")).unwrap(),
            Some(s("/usr/bin"))
        );
        let url = run(Step::Url, s("https://h.example:8443/a/b?x=1#f"))
            .unwrap()
            .unwrap();
        let Val::Json(j) = url else { panic!() };
        assert_eq!(j.get("domain").and_then(Json::as_str), Some("h.example"));
        assert_eq!(j.get("port"), Some(&Json::Int(8443)));
        assert_eq!(j.get("path").and_then(Json::as_str), Some("/a/b"));
        assert_eq!(j.get("query").and_then(Json::as_str), Some("x=1"));
    }
}
