//! LEEF 1.0 / 2.0 (IBM's format for QRadar), with our escaping policy: IBM defines no escapes, so
//! no value may ever hold a raw delimiter, CR or LF. Backslash is doubled first, then tab, CR and
//! LF become `\t` `\r` `\n`, and any other control character (or a non-tab delimiter) `\xHH`.

use std::io::Write as _;

use crate::format::ecs::{next_special, write_int, write_uint};
use crate::mapping::value::Val;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeefVersion {
    V1,
    V2,
}

#[derive(Debug, Clone)]
pub struct LeefOptions {
    pub version: LeefVersion,
    /// LEEF 2.0 attribute delimiter; LEEF 1.0 always uses tab.
    pub delimiter: char,
}

impl Default for LeefOptions {
    fn default() -> Self {
        LeefOptions {
            version: LeefVersion::V2,
            delimiter: '\t',
        }
    }
}

impl LeefOptions {
    /// Parses a delimiter as IBM writes it: one character, or `x09` / `0x5E` hex.
    pub fn parse_delimiter(s: &str) -> Result<char, String> {
        let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix('x'));
        let c = match hex {
            Some(h) if (1..=4).contains(&h.len()) => u32::from_str_radix(h, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| format!("`{s}` is not a hex character code"))?,
            _ => {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => c,
                    _ => return Err(format!("`{s}` is not one character or xHH")),
                }
            }
        };
        if !c.is_ascii()
            || c.is_ascii_alphanumeric()
            || matches!(c, '=' | '\\' | '\r' | '\n' | ' ' | '_')
        {
            return Err(format!(
                "{c:?} cannot delimit LEEF attributes (use tab, ^, | or another ASCII symbol)"
            ));
        }
        Ok(c)
    }

    /// The attribute delimiter as a byte.
    pub fn delimiter_byte(&self) -> u8 {
        self.delim()
    }

    fn delim(&self) -> u8 {
        match self.version {
            LeefVersion::V1 => b'\t',
            LeefVersion::V2 => self.delimiter as u8,
        }
    }
}

/// Writes `LEEF:<v>|Vendor|Product|Version|EventID|[delim|]` and the attributes.
pub fn write_leef<'v>(
    opts: &LeefOptions,
    header: [&str; 4],
    attrs: impl Iterator<Item = (&'v str, &'v Val<'v>)>,
    out: &mut Vec<u8>,
) {
    let delim = opts.delim();
    out.extend_from_slice(match opts.version {
        LeefVersion::V1 => b"LEEF:1.0|",
        LeefVersion::V2 => b"LEEF:2.0|",
    });
    for field in header {
        write_header_field(field, delim, 255, out);
        out.push(b'|');
    }
    if opts.version == LeefVersion::V2 {
        if delim == b'\t' {
            out.extend_from_slice(b"x09");
        } else if delim.is_ascii_graphic() && delim != b'|' {
            out.push(delim);
        } else {
            let _ = write!(out, "x{delim:02X}");
        }
        out.push(b'|');
    }
    let mut first = true;
    for (k, v) in attrs {
        if !first {
            out.push(delim);
        }
        first = false;
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        write_value(v, delim, out);
    }
}

/// Header fields have no escape at all in QRadar: anything that would end the field, the
/// attribute list or the line becomes `_`, and the field is cut at `max` characters.
fn write_header_field(s: &str, delim: u8, max: usize, out: &mut Vec<u8>) {
    let clean = |b: &u8| *b != b'|' && *b != delim && *b >= 0x20 && *b != 0x7f;
    if s.len() <= max && s.is_ascii() && s.as_bytes().iter().all(clean) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for c in s.chars().take(max) {
        if c == '|' || c.is_control() || (c.is_ascii() && c as u8 == delim) {
            out.push(b'_');
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

fn write_value(v: &Val, delim: u8, out: &mut Vec<u8>) {
    match v {
        // Clean text has no control character and no backslash; with a control character as
        // the delimiter only DEL can still need escaping. (The fold has no early exit, so it
        // compiles to vector compares; `contains` costs twice as much on these short values.)
        Val::Str(s)
            if s.is_clean()
                && delim < 0x20
                && !s.bytes().fold(false, |del, c| del | (c == 0x7f)) =>
        {
            out.extend_from_slice(s.as_bytes())
        }
        Val::Str(s) => escape(s, delim, out),
        Val::Int(i) => write_int(*i, out),
        Val::UInt(u) => write_uint(*u, out),
        Val::Time(t) => t.write_iso_millis_bytes(out),
        Val::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        other => escape(&other.to_text(), delim, out),
    }
}

/// The longest prefix of `s` whose escaped form is at most `max` bytes, cut on a character
/// boundary (an escape sequence is never split, since whole characters are kept or dropped).
pub fn prefix_within(s: &str, delim: u8, max: usize) -> String {
    let mut used = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        // As `escape` writes it: `\\` `\t` `\r` `\n` take two bytes, other specials `\xNN` four.
        let cost = match c {
            '\\' | '\t' | '\r' | '\n' => 2,
            c if c.is_ascii() && ((c as u8) < 0x20 || c as u8 == 0x7f || c as u8 == delim) => 4,
            c => c.len_utf8(),
        };
        if used + cost > max {
            break;
        }
        used += cost;
        end = i + c.len_utf8();
    }
    s[..end].to_string()
}

/// Escapes one value; unescaped runs are copied whole.
pub fn escape(s: &str, delim: u8, out: &mut Vec<u8>) {
    let b = s.as_bytes();
    let special = |c: u8| c < 0x20 || c == 0x7f || c == b'\\' || c == delim;
    let mut start = 0;
    while let Some(i) = next_special(b, start, 0x20, &[0x7f, b'\\', delim], special) {
        out.extend_from_slice(&b[start..i]);
        match b[i] {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\n' => out.extend_from_slice(b"\\n"),
            c => {
                let _ = write!(out, "\\x{c:02x}");
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::Text;

    #[test]
    fn prefixes_never_split_an_escape_or_a_character() {
        assert_eq!(prefix_within("ab\tc", b'\t', 3), "ab");
        assert_eq!(prefix_within("ab\tc", b'\t', 4), "ab\t");
        assert_eq!(prefix_within("a\\b", b'\t', 2), "a");
        assert_eq!(prefix_within("aé", b'\t', 2), "a");
        assert_eq!(prefix_within("aé", b'\t', 3), "aé");
        assert_eq!(
            prefix_within("a^b", b'^', 4),
            "a",
            "another delimiter costs \\xNN"
        );
        let mut out = Vec::new();
        escape(&prefix_within("x\r\ny\u{1}z", b'\t', 9), b'\t', &mut out);
        assert!(out.len() <= 9, "{}", String::from_utf8_lossy(&out));
    }

    fn render(opts: &LeefOptions, id: &str, attrs: &[(&str, Val)]) -> String {
        let mut out = Vec::new();
        write_leef(
            opts,
            ["Microsoft", "Defender XDR", "1.0", id],
            attrs.iter().map(|(k, v)| (*k, v)),
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn leef2_tab_declared_as_x09_and_values_escaped() {
        let v = Val::Str(Text::from("a\tb\r\nc\\d=e\u{1}"));
        let line = render(
            &LeefOptions::default(),
            "Proc|Created\n",
            &[("cat", Val::Int(1)), ("x", v)],
        );
        assert_eq!(line, "LEEF:2.0|Microsoft|Defender XDR|1.0|Proc_Created_|x09|cat=1\tx=a\\tb\\r\\nc\\\\d=e\\x01");
        assert!(!line.contains('\n') && !line.contains('\r'));
    }

    #[test]
    fn leef1_and_other_delimiters() {
        let v1 = LeefOptions {
            version: LeefVersion::V1,
            delimiter: '^',
        };
        assert_eq!(
            render(&v1, "E", &[("a", Val::Int(1)), ("b", Val::Bool(true))]),
            "LEEF:1.0|Microsoft|Defender XDR|1.0|E|a=1\tb=true"
        );
        let caret = LeefOptions {
            version: LeefVersion::V2,
            delimiter: '^',
        };
        let v = Val::Str(Text::from("x^y\tz"));
        assert_eq!(
            render(&caret, "E", &[("a", v)]),
            "LEEF:2.0|Microsoft|Defender XDR|1.0|E|^|a=x\\x5ey\\tz"
        );
        let pipe = LeefOptions {
            version: LeefVersion::V2,
            delimiter: '|',
        };
        assert_eq!(
            render(&pipe, "E", &[]),
            "LEEF:2.0|Microsoft|Defender XDR|1.0|E|x7C|"
        );
    }

    #[test]
    fn event_id_is_capped_at_255_characters() {
        let long = "é".repeat(300);
        let line = render(&LeefOptions::default(), &long, &[]);
        assert_eq!(line.matches('é').count(), 255);
    }

    /// Inverse of `escape`, to prove the escaping loses nothing.
    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match it.next() {
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some('x') => {
                    let hex: String = it.by_ref().take(2).collect();
                    out.push(char::from(
                        u8::from_str_radix(&hex, 16).expect("two hex digits"),
                    ));
                }
                other => panic!("dangling escape {other:?}"),
            }
        }
        out
    }

    #[test]
    fn escaping_round_trips_and_never_leaves_a_raw_delimiter_cr_or_lf() {
        const ALPHABET: &[char] = &[
            'a', 'Z', '0', ' ', '=', '|', '^', '\\', '\t', '\r', '\n', '\u{1}', '\u{7f}', 'é', '✓',
            'x',
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for delim in [b'\t', b'^', b'|'] {
            for _ in 0..2000 {
                let mut value = String::new();
                for _ in 0..(seed % 24) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    value.push(ALPHABET[(seed % ALPHABET.len() as u64) as usize]);
                }
                let mut out = Vec::new();
                escape(&value, delim, &mut out);
                let escaped = String::from_utf8(out).expect("UTF-8 stays UTF-8");
                assert!(
                    !escaped
                        .bytes()
                        .any(|b| b == delim || b == b'\r' || b == b'\n' || b < 0x20),
                    "{escaped:?}"
                );
                assert_eq!(unescape(&escaped), value);
                seed = seed.wrapping_add(1);
            }
        }
    }

    #[test]
    fn delimiter_parsing() {
        assert_eq!(LeefOptions::parse_delimiter("x09"), Ok('\t'));
        assert_eq!(LeefOptions::parse_delimiter("0x5E"), Ok('^'));
        assert_eq!(LeefOptions::parse_delimiter("^"), Ok('^'));
        assert!(LeefOptions::parse_delimiter("a").is_err());
        assert!(LeefOptions::parse_delimiter("=").is_err());
        assert!(LeefOptions::parse_delimiter("xZZ").is_err());
    }
}
