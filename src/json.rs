//! The JSON value records are parsed into: strings borrowed from the input where they have no
//! escapes, objects as member lists in source order. Measured on our corpus this parses about
//! twice as fast as `serde_json::Value` (whose objects are B-trees built by sorted insertion, the
//! larger part of its parse cost); lookups by key go through a family's member index, so the
//! linear `get` is used only on small top-level objects.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::de::StrRead;

/// A string value's text, borrowed where it can be.
///
/// Text is *clean* when it holds no byte that JSON must escape (`"`, `\` or a byte below 0x20).
/// Only this module's parser marks text clean: serde_json borrows a string from its input only
/// when the string has no escape sequences, and it refuses raw control characters, so borrowed
/// strings are clean. Writers copy clean text without scanning it; escaping is a tenth of the
/// translate path's cost otherwise (see BENCHMARKS.md). Cleanliness is a property of the
/// content, so owned copies and parts of clean text stay clean.
#[derive(Debug, Clone)]
pub struct Text<'a> {
    text: Cow<'a, str>,
    clean: bool,
}

impl<'a> Text<'a> {
    /// True when the text holds no byte that JSON must escape (see the type).
    pub fn is_clean(&self) -> bool {
        self.clean
    }

    /// The text, borrowed for `'a` when it is borrowed.
    pub fn borrowed(&self) -> Option<&'a str> {
        match self.text {
            Cow::Borrowed(b) => Some(b),
            Cow::Owned(_) => None,
        }
    }

    /// Text whose cleanliness is found by scanning it: for text made once, such as a mapping
    /// file's constants, and then borrowed per record with [`Text::reborrow`].
    pub fn checked(text: impl Into<Cow<'a, str>>) -> Text<'a> {
        let text = text.into();
        let clean = !text.bytes().any(crate::format::ecs::needs_json_escape);
        Text { text, clean }
    }

    /// The same text, borrowed from this one.
    pub fn reborrow(&self) -> Text<'_> {
        Text {
            text: Cow::Borrowed(&self.text),
            clean: self.clean,
        }
    }

    /// `part`, a slice of this text's borrowed string, as text. It stays clean when this text
    /// is clean and `part` lies inside it.
    pub fn part(&self, part: &'a str) -> Text<'a> {
        let inside = self.borrowed().is_some_and(|whole| {
            let (w, p) = (
                whole.as_bytes().as_ptr_range(),
                part.as_bytes().as_ptr_range(),
            );
            w.start <= p.start && p.end <= w.end
        });
        Text {
            text: Cow::Borrowed(part),
            clean: self.clean && inside,
        }
    }

    /// The characters of `range`, with this text's cleanliness.
    pub fn sub(&self, range: std::ops::Range<usize>) -> Text<'a> {
        let text = match &self.text {
            Cow::Borrowed(b) => Cow::Borrowed(&b[range]),
            Cow::Owned(o) => Cow::Owned(o[range].to_string()),
        };
        Text {
            text,
            clean: self.clean,
        }
    }

    /// The text in lower case. Case mappings turn letters into letters (and combining marks),
    /// never into quotes, backslashes or control characters, so clean text stays clean.
    pub fn lowercased(&self) -> Text<'static> {
        Text {
            text: Cow::Owned(self.text.to_lowercase()),
            clean: self.clean,
        }
    }

    /// The text in upper case; clean text stays clean (see [`Text::lowercased`]).
    pub fn uppercased(&self) -> Text<'static> {
        Text {
            text: Cow::Owned(self.text.to_uppercase()),
            clean: self.clean,
        }
    }

    pub fn into_owned(self) -> Text<'static> {
        Text {
            text: Cow::Owned(self.text.into_owned()),
            clean: self.clean,
        }
    }

    pub fn into_cow(self) -> Cow<'a, str> {
        self.text
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

/// Texts are equal when their characters are; cleanliness follows from the characters.
impl PartialEq for Text<'_> {
    fn eq(&self, other: &Text<'_>) -> bool {
        self.text == other.text
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Text<'a> {
        Text {
            text: Cow::Borrowed(s),
            clean: false,
        }
    }
}

impl From<String> for Text<'_> {
    fn from(s: String) -> Self {
        Text {
            text: Cow::Owned(s),
            clean: false,
        }
    }
}

impl<'a> From<Cow<'a, str>> for Text<'a> {
    fn from(text: Cow<'a, str>) -> Text<'a> {
        Text { text, clean: false }
    }
}

/// The documents of a JSON text one after another (one document, NDJSON, or concatenated).
pub struct JsonStream<'a>(serde_json::StreamDeserializer<'a, StrRead<'a>, Doc<'a>>);

impl<'a> JsonStream<'a> {
    pub fn new(text: &'a str) -> JsonStream<'a> {
        JsonStream(serde_json::Deserializer::from_str(text).into_iter())
    }

    /// Where the next document starts (or the previous one ended).
    pub fn byte_offset(&self) -> usize {
        self.0.byte_offset()
    }
}

impl<'a> Iterator for JsonStream<'a> {
    type Item = Result<Json<'a>, serde_json::Error>;
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|r| r.map(|Doc(j)| j))
    }
}

/// Strings of a record copied into many records (an incident's members into each of its alerts'
/// records, a CVE's into each affected device's) longer than this are carried whole into the
/// first copy only; the others get them cut to this many bytes, with a note
/// ([`Json::cap_strings`]). An incident's 100 KB title copied into each of 10,000 alerts' events
/// would otherwise make a gigabyte of output from a 142 KB page.
pub const FAN_OUT_TEXT_CAP: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Text<'a>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses one JSON text (borrowing from it).
    pub fn parse(text: &'a str) -> Result<Json<'a>, serde_json::Error> {
        serde_json::from_str(text).map(|Doc(j)| j)
    }

    /// Parses JSON text that does not outlive the call.
    pub fn parse_owned(text: &str) -> Option<Json<'static>> {
        Json::parse(text).ok().map(Json::into_owned)
    }

    pub fn into_owned(self) -> Json<'static> {
        match self {
            Json::Null => Json::Null,
            Json::Bool(b) => Json::Bool(b),
            Json::Int(i) => Json::Int(i),
            Json::UInt(u) => Json::UInt(u),
            Json::Float(f) => Json::Float(f),
            Json::Str(s) => Json::Str(s.into_owned()),
            Json::Array(a) => Json::Array(a.into_iter().map(Json::into_owned).collect()),
            Json::Object(o) => Json::Object(
                o.into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            ),
        }
    }

    /// Cuts every string longer than `cap` bytes (in this value and below it) at a character
    /// boundary, ending it with a note that says how long it was and where it is whole
    /// (`whole_in`). For values copied into many records (an incident's members into each of
    /// its alerts' events), so that one long text is not multiplied by the fan-out.
    pub fn cap_strings(&mut self, cap: usize, whole_in: &str) {
        match self {
            Json::Str(t) if t.len() > cap => {
                let mut end = cap;
                while !t.is_char_boundary(end) {
                    end -= 1;
                }
                let note = format!(
                    "{}…[cut by defender-dsm from {} bytes; whole in {whole_in}]",
                    &t[..end],
                    t.len()
                );
                *t = Text::checked(note);
            }
            Json::Array(items) => items.iter_mut().for_each(|v| v.cap_strings(cap, whole_in)),
            Json::Object(members) => members
                .iter_mut()
                .for_each(|(_, v)| v.cap_strings(cap, whole_in)),
            _ => {}
        }
    }

    /// The member `key` of an object (the first, if a producer repeated a key).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(o) => o.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[(Cow<'a, str>, Json<'a>)]> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }

    /// Compact JSON text, members in source order. A member name an object repeats (a producer
    /// that wrote a key twice, or two keys that snake-casing made one) is written once, with its
    /// first value, the one [`Json::get`] and the mappings read: Elasticsearch refuses a
    /// document with a repeated name.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Json::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
            Json::UInt(u) => out.extend_from_slice(u.to_string().as_bytes()),
            Json::Float(f) => {
                let _ = serde_json::to_writer(&mut *out, f);
            }
            Json::Str(s) => crate::format::ecs::write_text(s, out),
            Json::Array(a) => {
                out.push(b'[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    x.write(out);
                }
                out.push(b']');
            }
            Json::Object(o) => {
                out.push(b'{');
                // Small objects are checked by a scan of the names before; large ones by a set.
                let mut seen =
                    (o.len() > 16).then(|| std::collections::HashSet::with_capacity(o.len()));
                for (i, (k, v)) in o.iter().enumerate() {
                    let repeated = match seen.as_mut() {
                        Some(set) => !set.insert(k.as_ref()),
                        None => o[..i].iter().any(|(earlier, _)| earlier == k),
                    };
                    if repeated {
                        continue;
                    }
                    if out.last() != Some(&b'{') {
                        out.push(b',');
                    }
                    crate::format::ecs::write_str(k, out);
                    out.push(b':');
                    v.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Int(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(match i64::try_from(n) {
            Ok(i) => Json::Int(i),
            Err(_) => Json::UInt(n),
        })
    }

    fn visit_f64<E>(self, n: f64) -> Result<Json<'de>, E> {
        Ok(Json::Float(n))
    }

    /// Only serde_json's text readers call this visitor (see [`Doc`]), and they borrow only
    /// strings without escapes: clean text.
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Text {
            text: Cow::Borrowed(s),
            clean: true,
        }))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Text::from(s.to_string())))
    }

    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Text::from(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(Doc(x)) = seq.next_element()? {
            items.push(x);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(Key(k)) = map.next_key()? {
            let Doc(v) = map.next_value()?;
            members.push((k, v));
        }
        Ok(Json::Object(members))
    }
}

/// A parsed value, deserializable only inside this module: `Json` has no `Deserialize` of its
/// own, so no deserializer but serde_json's text readers can mark text clean.
struct Doc<'a>(Json<'a>);

impl<'de> Deserialize<'de> for Doc<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor).map(Doc)
    }
}

struct Key<'a>(Cow<'a, str>);

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(s.to_string())))
    }

    fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(s)))
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrows_plain_strings_keeps_order_and_round_trips() {
        let text = r#"{"b":"plain","a":"esc\\aped\u00e9","n":-1,"u":18446744073709551615,"r":639199803770463703,"f":1.5,"l":[null,true],"o":{}}"#;
        let j = Json::parse(text).unwrap();
        let o = j.as_object().unwrap();
        assert_eq!(
            o.iter().map(|(k, _)| k.as_ref()).collect::<Vec<_>>(),
            ["b", "a", "n", "u", "r", "f", "l", "o"]
        );
        assert!(
            matches!(j.get("b"), Some(Json::Str(t)) if t.is_clean() && t.borrowed() == Some("plain"))
        );
        assert!(matches!(j.get("a"), Some(Json::Str(t)) if !t.is_clean()));
        assert_eq!(j.get("a").and_then(Json::as_str), Some("esc\\apedé"));
        assert_eq!(j.get("u"), Some(&Json::UInt(u64::MAX)));
        assert_eq!(j.get("r"), Some(&Json::Int(639_199_803_770_463_703)));
        let again = j.to_string();
        assert_eq!(Json::parse(&again).unwrap(), j);
        let as_value: serde_json::Value = serde_json::from_str(&again).unwrap();
        assert_eq!(
            as_value,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
    }

    /// The writers copy clean text unscanned, so this is the property that keeps their output
    /// valid: whatever the input, text the parser marks clean has no byte JSON must escape.
    #[test]
    fn only_text_without_escapes_is_clean() {
        let special = |t: &Text| t.bytes().any(|c| c < 0x20 || c == b'"' || c == b'\\');
        for raw in [
            r#""plain""#,
            r#""tab\tin""#,
            r#""quote\"in""#,
            r#""back\\slash""#,
            r#""\u0001""#,
            r#""é and \u00e9""#,
            r#""DEL \u007f""#,
        ] {
            let Json::Str(t) = Json::parse(raw).unwrap() else {
                panic!("{raw} is a string")
            };
            assert!(!(t.is_clean() && special(&t)), "{raw} marked clean");
            let mut out = Vec::new();
            crate::format::ecs::write_text(&t, &mut out);
            assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), *t);
        }
        assert!(
            Json::parse("\"raw\ttab\"").is_err(),
            "serde_json refuses raw control characters, which clean text relies on"
        );
        let Json::Str(whole) = Json::parse(r#""C:/x/y.exe""#).unwrap() else {
            panic!()
        };
        assert!(whole.part(&whole.borrowed().unwrap()[5..]).is_clean());
        assert!(
            !whole.part("elsewhere").is_clean(),
            "text from outside is not vouched for"
        );
        assert!(whole.sub(0..2).is_clean() && whole.lowercased().is_clean());
        assert!(!Text::checked("a\"b").is_clean() && Text::checked("ab").is_clean());
    }

    #[test]
    fn a_repeated_member_name_is_written_once_with_its_first_value() {
        let many: Vec<String> = (0..40).map(|i| format!(r#""k{}":{i}"#, i % 20)).collect();
        let text = format!(
            r#"{{"a":1,"b":{{"x":1,"x":2,"y":[{{"z":1,"z":2}}]}},"a":2,"big":{{{}}}}}"#,
            many.join(",")
        );
        let mut out = Vec::new();
        Json::parse(&text).unwrap().write(&mut out);
        let written = String::from_utf8(out).unwrap();
        let firsts: Vec<String> = (0..20).map(|i| format!(r#""k{i}":{i}"#)).collect();
        assert_eq!(
            written,
            format!(
                r#"{{"a":1,"b":{{"x":1,"y":[{{"z":1}}]}},"big":{{{}}}}}"#,
                firsts.join(",")
            )
        );
    }
}
