//! decode -> map -> render over whole texts: the one path that the CLI, the golden fixtures, the
//! benchmark and (later) the service share.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::decode::{decode_text, DecodeError};
use crate::event::{RawRecord, SourceKind};
use crate::format::{render_ecs, render_leef, RenderOptions};
use crate::mapping::scratch::Scratch;
use crate::mapping::time::Timestamp;
use crate::mapping::{MapOptions, MappedEvent, MappingSet, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Leef,
    Ecs,
}

/// Records seen, by outcome and by family (or category, for unmapped ones).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub mapped: u64,
    pub unmapped: u64,
    pub failed: u64,
    pub conversion_errors: u64,
    pub by_family: BTreeMap<String, u64>,
    /// First reasons seen for unmapped/failed records, at most a few, for the summary.
    pub reasons: Vec<String>,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.mapped + self.unmapped + self.failed
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} records: {} mapped, {} unmapped, {} failed",
            self.total(),
            self.mapped,
            self.unmapped,
            self.failed
        );
        if self.conversion_errors > 0 {
            s.push_str(&format!(
                ", {} field conversion errors",
                self.conversion_errors
            ));
        }
        for (fam, n) in &self.by_family {
            s.push_str(&format!("\n  {}: {n}", printable(fam)));
        }
        for r in &self.reasons {
            s.push_str(&format!("\n  note: {}", printable(r)));
        }
        s
    }
}

/// Text from an input (a record's category, a reason quoting it) made safe for a terminal or a
/// log line: control characters (line breaks, ANSI escapes) are written as escapes.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| match c.is_control() {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect(),
    )
}

pub struct Translator {
    pub mappings: MappingSet,
    pub map: MapOptions,
    pub render: RenderOptions,
}

impl Translator {
    pub fn new(mappings: MappingSet, map: MapOptions, render: RenderOptions) -> Self {
        Translator {
            mappings,
            map,
            render,
        }
    }

    /// Maps one record and appends its rendering(s), each followed by `\n`.
    pub fn record(
        &self,
        rec: &RawRecord,
        formats: &[Format],
        cache: &mut Scratch,
        out: &mut Vec<u8>,
        counts: &mut Counts,
    ) {
        let ev = self.map_counted(rec, cache, counts);
        self.render_lines(&ev, formats, out);
    }

    /// Appends one event in `format`, without a line terminator.
    pub fn render(&self, ev: &MappedEvent, format: Format, out: &mut Vec<u8>) {
        match format {
            Format::Leef => render_leef(ev, &self.render, out),
            Format::Ecs => render_ecs(ev, out),
        }
    }

    /// Appends one event in each of `formats`, each followed by `\n`.
    fn render_lines(&self, ev: &MappedEvent, formats: &[Format], out: &mut Vec<u8>) {
        for f in formats {
            self.render(ev, *f, out);
            out.push(b'\n');
        }
    }

    /// Maps one record and counts the outcome.
    pub fn map_counted<'a>(
        &'a self,
        rec: &'a RawRecord<'a>,
        cache: &mut Scratch,
        counts: &mut Counts,
    ) -> MappedEvent<'a> {
        let ev = self.mappings.map(rec, &self.map, cache);
        match &ev.outcome {
            Outcome::Mapped => counts.mapped += 1,
            Outcome::Unmapped(r) | Outcome::Failed(r) => {
                if matches!(ev.outcome, Outcome::Unmapped(_)) {
                    counts.unmapped += 1;
                } else {
                    counts.failed += 1;
                }
                if counts.reasons.len() < 5 {
                    counts.reasons.push(format!("{}: {r}", rec.position));
                }
            }
        }
        counts.conversion_errors += ev.errors.len() as u64;
        match ev.family {
            Some(f) => match counts.by_family.get_mut(f.name.as_str()) {
                Some(n) => *n += 1,
                None => {
                    counts.by_family.insert(f.name.clone(), 1);
                }
            },
            None => {
                let key = format!(
                    "({}) {}",
                    ev.outcome.label(),
                    crate::mapping::source_category(rec)
                );
                *counts.by_family.entry(key).or_default() += 1;
            }
        }
        ev
    }

    /// Maps every record of `text` and hands each, with its event, to `f`, in input order.
    pub fn each_event(
        &self,
        text: &str,
        origin: &Arc<str>,
        forced: Option<SourceKind>,
        counts: &mut Counts,
        f: impl FnMut(&RawRecord, &MappedEvent),
    ) -> Result<(), DecodeError> {
        self.each_event_received(text, origin, forced, None, counts, f)
    }

    /// [`Translator::each_event`] for a payload received at `received`: the time of the events
    /// whose records carry none.
    pub fn each_event_received(
        &self,
        text: &str,
        origin: &Arc<str>,
        forced: Option<SourceKind>,
        received: Option<Timestamp>,
        counts: &mut Counts,
        mut f: impl FnMut(&RawRecord, &MappedEvent),
    ) -> Result<(), DecodeError> {
        let mut cache = Scratch::default();
        decode_text(text, origin, forced, |mut rec| {
            rec.received = received;
            let ev = self.map_counted(&rec, &mut cache, counts);
            f(&rec, &ev);
        })
        .map(|_| ())
    }

    /// Translates every record of `text`. Output for documents before a malformed one is kept.
    pub fn text(
        &self,
        text: &str,
        origin: &Arc<str>,
        forced: Option<SourceKind>,
        formats: &[Format],
        out: &mut Vec<u8>,
        counts: &mut Counts,
    ) -> Result<(), DecodeError> {
        self.text_flushing(text, origin, forced, formats, out, counts, |_| {})
    }

    /// Same as [`Translator::text`], handing `out` to `flush` whenever it holds 64 KiB or more,
    /// so that a large input is not held twice in memory. `flush` empties what it has taken.
    #[allow(clippy::too_many_arguments)]
    pub fn text_flushing(
        &self,
        text: &str,
        origin: &Arc<str>,
        forced: Option<SourceKind>,
        formats: &[Format],
        out: &mut Vec<u8>,
        counts: &mut Counts,
        mut flush: impl FnMut(&mut Vec<u8>),
    ) -> Result<(), DecodeError> {
        self.each_event(text, origin, forced, counts, |_, ev| {
            self.render_lines(ev, formats, out);
            if out.len() >= 1 << 16 {
                flush(out);
            }
        })
    }
}
