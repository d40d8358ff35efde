//! Paths into a record: `properties.AdditionalFields.Count`, `evidence[*].mdeDeviceId`,
//! `properties.AdditionalFields['ARG.CLOUD_SERVICE']`, `value[0]`.
//!
//! A path that reaches a string while segments remain parses that string as JSON and goes on
//! inside it (AdditionalFields and the other JSON-in-string columns). Each such string is parsed
//! once per record, whatever the number of paths that go through it.

use super::scratch::Scratch;
use crate::json::Json;

use super::value::Val;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub text: String,
    segs: Vec<Seg>,
}

impl Path {
    /// `$` is the record itself.
    pub fn parse(text: &str) -> Result<Path, String> {
        if text == "$" {
            return Ok(Path {
                text: text.to_string(),
                segs: Vec::new(),
            });
        }
        let mut segs = Vec::new();
        let b = text.as_bytes();
        let mut i = 0;
        let mut expect_key = true;
        while i < b.len() {
            match b[i] {
                b'[' => {
                    let close = text[i..].find(']').ok_or("unclosed `[`")? + i;
                    let inner = text[i + 1..close].trim();
                    if inner == "*" {
                        segs.push(Seg::All);
                    } else if let Some(q) =
                        inner.strip_prefix('\'').and_then(|r| r.strip_suffix('\''))
                    {
                        segs.push(Seg::Key(q.to_string()));
                    } else {
                        let n = inner.parse().map_err(|_| {
                            format!("`[{inner}]` is not an index, `*` or a quoted key")
                        })?;
                        segs.push(Seg::Index(n));
                    }
                    i = close + 1;
                    expect_key = false;
                }
                b'.' => {
                    if expect_key {
                        return Err("empty segment".into());
                    }
                    i += 1;
                    expect_key = true;
                }
                _ => {
                    if !expect_key {
                        return Err(format!("expected `.` or `[` at byte {i}"));
                    }
                    let end = text[i..].find(['.', '[']).map_or(b.len(), |e| e + i);
                    segs.push(Seg::Key(text[i..end].to_string()));
                    i = end;
                    expect_key = false;
                }
            }
        }
        if segs.is_empty() || expect_key {
            return Err("empty path or trailing `.`".into());
        }
        Ok(Path {
            text: text.to_string(),
            segs,
        })
    }

    /// The first key, for paths that start at a top-level member.
    pub fn first_key(&self) -> Option<&str> {
        match self.segs.first() {
            Some(Seg::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// `(parent, last key)` when the path is `parent.key` with plain keys only.
    pub fn split_last_key(&self) -> Option<(Path, &str)> {
        match self.segs.split_last() {
            Some((Seg::Key(k), rest)) if !rest.is_empty() => Some((
                Path {
                    text: String::new(),
                    segs: rest.to_vec(),
                },
                k.as_str(),
            )),
            _ => None,
        }
    }

    /// For `prefix.key.rest...`: the key and the rest (possibly empty) of the path.
    pub fn strip_member(&self, prefix: &Path) -> Option<(&str, Path)> {
        let rest = self.segs.strip_prefix(prefix.segs.as_slice())?;
        match rest.split_first() {
            Some((Seg::Key(k), tail)) => Some((
                k.as_str(),
                Path {
                    text: self.text.clone(),
                    segs: tail.to_vec(),
                },
            )),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    pub fn same_node(&self, other: &Path) -> bool {
        self.segs == other.segs
    }

    /// The node itself, when the path goes through plain JSON (no JSON-in-string, no `[*]`).
    pub fn node<'a, 'j>(&self, root: &'a Json<'j>) -> Option<&'a Json<'j>> {
        let mut cur = root;
        for seg in &self.segs {
            cur = match (seg, cur) {
                (Seg::Key(k), Json::Object(o)) => member(o, k)?,
                (Seg::Index(n), Json::Array(a)) => a.get(*n)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The value at this path; absent for missing, `null` and `""`.
    pub fn resolve<'a>(&self, root: &'a Json<'a>, cache: &mut Scratch) -> Option<Val<'a>> {
        if !self.segs.contains(&Seg::All) {
            return walk_one(root, &self.segs, cache);
        }
        let mut out = Vec::new();
        walk(root, &self.segs, cache, &mut out);
        let mut flat = Vec::with_capacity(out.len());
        for v in out {
            match v {
                Val::List(items) => flat.extend(items),
                other => flat.push(other),
            }
        }
        (!flat.is_empty()).then_some(Val::List(flat))
    }
}

/// A path without `[*]`: at most one value, found without collecting.
fn member<'a, 'j>(
    o: &'a [(std::borrow::Cow<'j, str>, Json<'j>)],
    key: &str,
) -> Option<&'a Json<'j>> {
    o.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn walk_one<'a>(mut cur: &'a Json<'a>, segs: &[Seg], cache: &mut Scratch) -> Option<Val<'a>> {
    for (i, seg) in segs.iter().enumerate() {
        cur = match (seg, cur) {
            (Seg::Key(k), Json::Object(o)) => member(o, k)?,
            (Seg::Index(n), Json::Array(a)) => a.get(*n)?,
            (_, Json::Str(s)) => {
                let inner = cache.parsed(s)?;
                return walk_one(inner, &segs[i..], &mut Scratch::default()).map(Val::into_owned);
            }
            _ => return None,
        };
    }
    Val::from_json(cur)
}

fn walk<'a>(cur: &'a Json<'a>, segs: &[Seg], cache: &mut Scratch, out: &mut Vec<Val<'a>>) {
    let Some((seg, rest)) = segs.split_first() else {
        out.extend(Val::from_json(cur));
        return;
    };
    match (seg, cur) {
        (Seg::Key(k), Json::Object(o)) => {
            if let Some(next) = member(o, k) {
                walk(next, rest, cache, out);
            }
        }
        (Seg::Index(n), Json::Array(a)) => {
            if let Some(next) = a.get(*n) {
                walk(next, rest, cache, out);
            }
        }
        (Seg::All, Json::Array(a)) => {
            for next in a {
                walk(next, rest, cache, out);
            }
        }
        (_, Json::Str(s)) => {
            if let Some(inner) = cache.parsed(s) {
                let mut owned = Vec::new();
                walk(inner, segs, &mut Scratch::default(), &mut owned);
                out.extend(owned.into_iter().map(|v: Val<'_>| v.into_owned()));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(path: &str, v: &serde_json::Value) -> Option<String> {
        let text = v.to_string();
        let v = Json::parse(&text).unwrap();
        let p = Path::parse(path).unwrap();
        p.resolve(&v, &mut Scratch::default())
            .map(|x| x.to_text().into_owned())
    }

    #[test]
    fn plain_wildcard_quoted_and_json_in_string() {
        let rec = json!({
            "properties": {
                "ActionType": "X",
                "AdditionalFields": "{\"Count\":\"1\",\"ARG.CLOUD\":\"ts\",\"Inner\":\"{\\\"a\\\":2}\"}",
                "Empty": "",
                "Null": null
            },
            "evidence": [{"id": "a"}, {"other": 1}, {"id": "b"}]
        });
        assert_eq!(get("properties.ActionType", &rec).as_deref(), Some("X"));
        assert_eq!(
            get("properties.AdditionalFields.Count", &rec).as_deref(),
            Some("1")
        );
        assert_eq!(
            get("properties.AdditionalFields['ARG.CLOUD']", &rec).as_deref(),
            Some("ts")
        );
        assert_eq!(
            get("properties.AdditionalFields.Inner.a", &rec).as_deref(),
            Some("2")
        );
        assert_eq!(get("evidence[*].id", &rec).as_deref(), Some("a,b"));
        assert_eq!(get("evidence[2].id", &rec).as_deref(), Some("b"));
        assert_eq!(get("properties.Empty", &rec), None);
        assert_eq!(get("properties.Null", &rec), None);
        assert_eq!(get("properties.Missing.Deeper", &rec), None);
    }

    #[test]
    fn malformed_json_in_string_is_absent_not_an_error() {
        let rec = json!({"p": {"A": "{\"truncated\": "}});
        assert_eq!(get("p.A.truncated", &rec), None);
        assert_eq!(get("p.A", &rec).as_deref(), Some("{\"truncated\": "));
    }

    #[test]
    fn bad_paths_are_rejected() {
        for p in ["", "a.", ".a", "a..b", "a[", "a[x]"] {
            assert!(Path::parse(p).is_err(), "{p}");
        }
    }
}
