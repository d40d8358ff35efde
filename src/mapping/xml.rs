//! A small element tree over quick-xml that remembers where every element and attribute starts,
//! so that every diagnostic can say file:line:column.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// 1-based line and column of a place in a mapping file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone)]
pub struct Attr {
    pub name: String,
    pub value: String,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct Element {
    pub name: String,
    pub pos: Pos,
    pub attrs: Vec<Attr>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.attr(name).map(|a| a.value.as_str())
    }
}

/// Maps byte offsets to line:column.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn pos(&self, text: &str, offset: usize) -> Pos {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let column = text.get(start..offset).map_or(1, |s| s.chars().count() + 1);
        Pos { line, column }
    }
}

/// Parses a whole file into its root element, or says where it is not well-formed.
pub fn parse(text: &str) -> Result<Element, (Pos, String)> {
    let index = LineIndex::new(text);
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| {
            (
                index.pos(text, reader.error_position() as usize),
                format!("malformed XML: {e}"),
            )
        })?;
        let at = skip_ws(text, before);
        match event {
            Event::Start(e) => stack.push(element(&e, text, at, &index)?),
            Event::Empty(e) => {
                let el = element(&e, text, at, &index)?;
                attach(&mut stack, &mut root, el, index.pos(text, at))?;
            }
            Event::End(_) => {
                if let Some(el) = stack.pop() {
                    attach(&mut stack, &mut root, el, index.pos(text, at))?;
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let raw = t.xml_content(quick_xml::XmlVersion::Implicit1_0);
                    top.text.push_str(&raw);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    let name: &str = &r;
                    let name = name.to_string();
                    let resolved = match name.as_str() {
                        "lt" => "<".to_string(),
                        "gt" => ">".to_string(),
                        "amp" => "&".to_string(),
                        "quot" => "\"".to_string(),
                        "apos" => "'".to_string(),
                        other => char_ref(other).map(String::from).ok_or_else(|| {
                            (index.pos(text, at), format!("unknown entity `&{other};`"))
                        })?,
                    };
                    top.text.push_str(&resolved);
                }
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    let cdata: &str = &c;
                    top.text.push_str(cdata);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err((open.pos, format!("element <{}> is never closed", open.name)));
    }
    root.ok_or((Pos { line: 1, column: 1 }, "no root element".to_string()))
}

fn char_ref(name: &str) -> Option<char> {
    let code = if let Some(hex) = name.strip_prefix("#x") {
        u32::from_str_radix(hex, 16).ok()?
    } else {
        name.strip_prefix('#')?.parse().ok()?
    };
    char::from_u32(code)
}

fn skip_ws(text: &str, mut at: usize) -> usize {
    let b = text.as_bytes();
    while at < b.len() && b[at].is_ascii_whitespace() {
        at += 1;
    }
    at
}

fn attach(
    stack: &mut [Element],
    root: &mut Option<Element>,
    el: Element,
    pos: Pos,
) -> Result<(), (Pos, String)> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None if root.is_none() => *root = Some(el),
        None => return Err((pos, "more than one root element".to_string())),
    }
    Ok(())
}

fn element(
    e: &BytesStart,
    text: &str,
    at: usize,
    index: &LineIndex,
) -> Result<Element, (Pos, String)> {
    let pos = index.pos(text, at);
    let name: String = e.name().as_ref().to_owned();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| (pos, format!("bad attribute in <{name}>: {err}")))?;
        let key: String = a.key.as_ref().to_owned();
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| (pos, format!("bad value of `{key}` in <{name}>: {err}")))?
            .into_owned();
        // Attribute positions: find `key=` inside the tag's own text, so errors point at it.
        let tag_text = text.get(at..).unwrap_or("");
        let tag_end = tag_text.find('>').unwrap_or(tag_text.len());
        let apos =
            find_attr(&tag_text[..tag_end], &key).map_or(pos, |off| index.pos(text, at + off));
        attrs.push(Attr {
            name: key,
            value,
            pos: apos,
        });
    }
    Ok(Element {
        name,
        pos,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

fn find_attr(tag: &str, key: &str) -> Option<usize> {
    let b = tag.as_bytes();
    let mut from = 0;
    while let Some(i) = tag[from..].find(key) {
        let at = from + i;
        let before_ok = at > 0 && b[at - 1].is_ascii_whitespace();
        let rest = tag[at + key.len()..].trim_start();
        if before_ok && rest.starts_with('=') {
            return Some(at);
        }
        from = at + key.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_elements_and_attributes() {
        let text =
            "<?xml version=\"1.0\"?>\n<a x=\"1\">\n  <b  y=\"&lt;2\"/>\n  <c>t&amp;u</c>\n</a>\n";
        let root = parse(text).unwrap();
        assert_eq!(root.pos, Pos { line: 2, column: 1 });
        let b = &root.children[0];
        assert_eq!(b.pos, Pos { line: 3, column: 3 });
        assert_eq!(b.attr("y").unwrap().pos, Pos { line: 3, column: 7 });
        assert_eq!(b.get("y"), Some("<2"));
        assert_eq!(root.children[1].text, "t&u");
    }

    #[test]
    fn malformed_xml_is_located() {
        let (pos, msg) = parse("<a>\n  <b>\n</a>\n").unwrap_err();
        assert_eq!(pos.line, 3, "{msg}");
    }
}
