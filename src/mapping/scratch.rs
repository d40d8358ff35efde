//! Per-worker state reused from one record to the next: JSON parsed out of strings while one
//! record is mapped, and each family's last record shape.

use std::fmt::Write as _;

use regex::Regex;

use super::family::{FxMap, Member};
use super::steps::snake_case;
use crate::json::Json;

/// One translator worker's scratch state. Not shared between threads.
#[derive(Default)]
pub struct Scratch {
    parsed: Vec<(usize, Option<Json<'static>>)>,
    shapes: Vec<(usize, Shape)>,
    id_buffer: Vec<u8>,
    /// Conditions of the current record already evaluated (bit per condition id below 64) and
    /// their results: a `<group>`'s condition is evaluated once, not once per field.
    conditions_known: u64,
    conditions_true: u64,
    /// GeoIP answers by address (also the misses), bounded; made on first use, as the cache
    /// allocates its whole table up front and most scratches (nested string JSON, no GeoIP
    /// database) never look an address up.
    geo: Option<lru::LruCache<std::net::IpAddr, Option<std::sync::Arc<super::geo::GeoInfo>>>>,
    /// Regex captures by group, pattern and text (the key's parts joined by NUL, which XML
    /// cannot carry in a pattern): the same values recur from record to record (MITRE
    /// technique names, file names), and a capture costs the regex crate's backtracker 5-17k
    /// instructions on them. Keyed by the pattern's text, not the rule, so that an entry is
    /// right for any mapping set. Bounded; starts over when full.
    captures: FxMap<Box<str>, Option<Box<str>>>,
    capture_key: String,
}

/// Captures a worker keeps, and the longest text it keeps them for (longer values, such as
/// command lines and URLs, rarely recur).
const CAPTURES: usize = 4096;
const CAPTURE_TEXT: usize = 256;

/// Addresses whose GeoIP answers a worker keeps.
const GEO_CACHE: usize = 16_384;

/// The members of the last record of a family, in order, with what each name resolved to.
/// Records of one table arrive with the same columns in the same order, so the next record's
/// names are checked against these with one string compare each instead of a hash lookup. The
/// names are kept back to back in one buffer: boxed one by one, each compare was a cache miss.
#[derive(Default)]
pub struct Shape {
    /// Each member's name, then its snake_case name when it is not a known column.
    text: String,
    entries: Vec<ShapeEntry>,
}

/// One member of a [`Shape`]: its name is `text[start..name_end]`, its snake_case name
/// `text[name_end..end]` (none when empty).
struct ShapeEntry {
    start: u32,
    name_end: u32,
    end: u32,
    member: Member,
}

impl Scratch {
    /// The cached answer for `ip`, or `look` asked and its answer kept.
    pub(super) fn geo(
        &mut self,
        ip: std::net::IpAddr,
        look: impl FnOnce(std::net::IpAddr) -> Option<std::sync::Arc<super::geo::GeoInfo>>,
    ) -> Option<std::sync::Arc<super::geo::GeoInfo>> {
        let cache = self.geo.get_or_insert_with(|| {
            lru::LruCache::new(
                std::num::NonZeroUsize::new(GEO_CACHE).unwrap_or(std::num::NonZeroUsize::MIN),
            )
        });
        if let Some(hit) = cache.get(&ip) {
            return hit.clone();
        }
        let answer = look(ip);
        cache.put(ip, answer.clone());
        answer
    }

    /// Forgets the JSON parsed for the previous record.
    pub fn clear(&mut self) {
        self.parsed.clear();
        self.conditions_known = 0;
    }

    /// The result of condition `id` for this record, if already evaluated.
    pub(super) fn condition(&self, id: usize) -> Option<bool> {
        let bit = 1u64.checked_shl(u32::try_from(id).ok()?)?;
        (self.conditions_known & bit != 0).then_some(self.conditions_true & bit != 0)
    }

    pub(super) fn remember_condition(&mut self, id: usize, value: bool) {
        let Some(bit) = u32::try_from(id).ok().and_then(|i| 1u64.checked_shl(i)) else {
            return;
        };
        self.conditions_known |= bit;
        if value {
            self.conditions_true |= bit;
        } else {
            self.conditions_true &= !bit;
        }
    }

    /// Capture group `group` of `re`'s first match in `text`, when it matched and is not empty.
    pub(super) fn capture(&mut self, re: &Regex, group: usize, text: &str) -> Option<String> {
        let run = || {
            re.captures(text)
                .and_then(|c| c.get(group))
                .map(|m| m.as_str())
                .filter(|m| !m.is_empty())
                .map(str::to_string)
        };
        if text.len() > CAPTURE_TEXT {
            return run();
        }
        let key = &mut self.capture_key;
        key.clear();
        let _ = write!(key, "{group}\0{}\0{text}", re.as_str());
        if let Some(hit) = self.captures.get(key.as_str()) {
            return hit.as_deref().map(str::to_string);
        }
        let found = run();
        if self.captures.len() >= CAPTURES {
            self.captures.clear();
        }
        self.captures
            .insert(key.as_str().into(), found.as_deref().map(Box::from));
        found
    }

    /// `s` parsed as JSON, once per record (strings are told apart by address).
    pub(super) fn parsed(&mut self, s: &str) -> Option<&Json<'static>> {
        let key = s.as_ptr() as usize;
        let at = match self.parsed.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.parsed.push((key, Json::parse_owned(s)));
                self.parsed.len() - 1
            }
        };
        self.parsed[at].1.as_ref()
    }

    /// The buffer record ids are hashed from, empty, reused from record to record.
    pub(super) fn take_id_buffer(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.id_buffer);
        b.clear();
        b
    }

    pub(super) fn return_id_buffer(&mut self, b: Vec<u8>) {
        self.id_buffer = b;
    }

    pub(super) fn shape(&mut self, family: usize) -> &mut Shape {
        let at = match self.shapes.iter().position(|(f, _)| *f == family) {
            Some(i) => i,
            None => {
                self.shapes.push((family, Shape::default()));
                self.shapes.len() - 1
            }
        };
        &mut self.shapes[at].1
    }
}

impl Shape {
    /// What the `i`-th member name resolves to (and its snake_case name when it is not a known
    /// column), using `lookup` only when the name differs from the last record's.
    pub(super) fn resolve(
        &mut self,
        i: usize,
        name: &str,
        lookup: impl FnOnce(&str) -> Member,
    ) -> (Member, Option<&str>) {
        let hit = self
            .entries
            .get(i)
            .is_some_and(|e| self.text[e.start as usize..e.name_end as usize] == *name);
        if !hit {
            self.entries.truncate(i);
            self.text
                .truncate(self.entries.last().map_or(0, |e| e.end as usize));
            let member = lookup(name);
            let start = self.text.len() as u32;
            self.text.push_str(name);
            let name_end = self.text.len() as u32;
            if member.column.is_none() {
                self.text.push_str(&snake_case(name));
            }
            self.entries.push(ShapeEntry {
                start,
                name_end,
                end: self.text.len() as u32,
                member,
            });
        }
        self.entry(i)
    }

    /// The `i`-th member as the last [`Shape::resolve`] of it left it.
    pub(super) fn entry(&self, i: usize) -> (Member, Option<&str>) {
        let Some(e) = self.entries.get(i) else {
            return (Member::default(), None);
        };
        let snake = &self.text[e.name_end as usize..e.end as usize];
        (e.member, (!snake.is_empty()).then_some(snake))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembered captures answer as the regex does: per pattern, per group, per text, and for
    /// misses and empty groups too; texts too long to keep still get their answer.
    #[test]
    fn captures_remembered_per_pattern_group_and_text() {
        let id = Regex::new(r"\(([^()]+)\)\s*$").unwrap();
        let name = Regex::new(r"^(.*?)\s*\([^()]+\)\s*$").unwrap();
        let both = Regex::new(r"^(\w*)-(\w+)$").unwrap();
        let long = format!("{} (T1)", "x".repeat(CAPTURE_TEXT));
        let mut cache = Scratch::default();
        for _ in 0..2 {
            let t = "Process Injection (T1055)";
            assert_eq!(cache.capture(&id, 1, t).as_deref(), Some("T1055"));
            assert_eq!(
                cache.capture(&name, 1, t).as_deref(),
                Some("Process Injection")
            );
            assert_eq!(cache.capture(&name, 1, "(T1055)"), None, "empty group");
            assert_eq!(cache.capture(&id, 1, "no technique"), None, "no match");
            assert_eq!(cache.capture(&both, 1, "CVE-2024").as_deref(), Some("CVE"));
            assert_eq!(cache.capture(&both, 2, "CVE-2024").as_deref(), Some("2024"));
            assert_eq!(cache.capture(&id, 1, &long).as_deref(), Some("T1"));
        }
        assert_eq!(cache.captures.len(), 6, "the long text is not kept");
    }
}
