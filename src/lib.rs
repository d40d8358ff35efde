//! defender-dsm: Microsoft 365 Defender (Defender XDR) data to QRadar LEEF and Elastic ECS.
//!
//! Data flow: an input hands over a payload (an Event Hubs message body, a Graph or Defender for
//! Endpoint list page, a SIEM API array, single items or NDJSON); [`decode`] splits it into
//! [`event::RawRecord`]s and tells each record's source kind from its shape; the
//! [`mapping::MappingSet`], compiled once from the declarative `mappings/*.xml` files, selects the
//! family that claims the record, extracts and converts its fields and classifies it through the
//! family's QRadar event map, giving one [`mapping::MappedEvent`]; [`format`] renders that single
//! decode twice, as a syslog-framed LEEF event and as an ECS JSON document. Records no family can
//! map are never dropped: they become generic events that carry the raw record and the reason.
//! [`translate::Translator`] runs this path for the CLI (`translate`, `replay`, `check`), the
//! tests and the benchmark alike.
//!
//! Modules: `event` (record types), `json` (the borrowed JSON records are parsed into), `decode`
//! (payload shapes), `correlate` (the vulnerability join), `mapping` (pure engine: XML, paths,
//! conversions, selection, event maps, coverage), `format` (pure: LEEF, syslog headers, ECS
//! writer), `export` (pure: QRadar content from the mappings), `output` (I/O: syslog),
//! `translate` (decode -> map -> render), `cli` (commands).

pub mod cli;
pub mod config;
pub mod correlate;
pub mod decode;
pub mod event;
pub mod export;
pub mod format;
pub mod inputs;
pub mod json;
pub mod mapping;
pub mod output;
pub mod pipeline;
pub mod telemetry;
pub mod translate;
