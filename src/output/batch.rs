//! `Batch`: the events of one submission, encoded for one output (LEEF within its size, a
//! `_bulk` entry, or an ECS document), and those that could not be encoded, for the dead letters.

use super::bulk::encode_entry;
use super::dead_letter::encode_meta;
use crate::event::RawRecord;
use crate::format::{render_ecs, render_leef_within, Fit, RenderOptions};
use crate::mapping::MappedEvent;

/// How events are encoded for an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    /// Syslog header + LEEF, within this many bytes.
    Leef { max: usize },
    /// A `_bulk` entry (see [`super::bulk`]).
    Bulk { namespace: String },
    /// An ECS document.
    Ecs,
}

/// Events of one submission, encoded for one output, in input order.
#[derive(Default)]
pub struct Batch {
    pub events: Vec<Vec<u8>>,
    /// Events that could not be encoded for this output: reason and metadata line.
    pub refused: Vec<(String, Vec<u8>)>,
    /// LEEF events whose values were trimmed to fit.
    pub trimmed: u64,
    /// Bytes of `events` and `refused`.
    pub bytes: usize,
}

impl Batch {
    pub fn add(
        &mut self,
        encoding: &Encoding,
        ev: &MappedEvent,
        rec: &RawRecord,
        render: &RenderOptions,
        mapping_version: &str,
    ) {
        let mut out = Vec::new();
        match encoding {
            Encoding::Leef { max } => match render_leef_within(ev, render, *max, &mut out) {
                Fit::Whole => {}
                Fit::Trimmed(_) => self.trimmed += 1,
                Fit::TooLarge => {
                    out.clear();
                    encode_meta(ev, rec, mapping_version, &mut out);
                    self.bytes += out.len();
                    self.refused.push((
                        format!("the LEEF event does not fit in {max} bytes even with its values trimmed"),
                        out,
                    ));
                    return;
                }
            },
            Encoding::Bulk { namespace } => {
                encode_entry(ev, rec, namespace, mapping_version, &mut out)
            }
            Encoding::Ecs => render_ecs(ev, &mut out),
        }
        self.bytes += out.len();
        self.events.push(out);
    }

    pub fn len(&self) -> usize {
        self.events.len() + self.refused.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
