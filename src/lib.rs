//! defender-dsm: Microsoft 365 Defender (Defender XDR) data to QRadar LEEF and Elastic ECS.
//!
//! Data flow: an input (for `serve`: the HTTP ingest endpoint, the Event Hubs consumers over the
//! Kafka endpoint or AMQP, the Microsoft API pollers; files for `translate`) hands over a payload
//! (an Event Hubs message body, a Graph or Defender for Endpoint list page, a SIEM API array,
//! single items or NDJSON); [`decode`] splits it into [`event::RawRecord`]s and tells each
//! record's source kind from its shape; the [`mapping::MappingSet`], compiled once from the
//! declarative `mappings/*.xml` files, selects the family that claims the record, extracts and
//! converts its fields and classifies it through the family's QRadar event map, giving one
//! [`mapping::MappedEvent`] (records no family can map become generic events that carry the raw
//! record and the reason, never dropped); [`format`] renders that single decode as a syslog-framed
//! LEEF event and as an ECS JSON document; the [`pipeline::Pipeline`] encodes each event for every
//! output whose route admits it and hands the batches to the outputs' workers
//! ([`output::worker`]: bounded queue, durable spool, dead letters, backoff), and answers the
//! input only once every output has the events sent or spooled. [`translate::Translator`] runs
//! decode -> map -> render for the CLI, the service, the tests and the benchmark alike.
//!
//! Modules: `event` (record types), `json` (the borrowed JSON records are parsed into), `decode`
//! (payload shapes), `correlate` (the vulnerability join), `mapping` (pure engine: XML, paths,
//! conversions, selection, event maps, coverage), `format` (pure: LEEF, syslog headers, ECS
//! writer), `export` (pure: QRadar content from the mappings), `translate` (decode -> map ->
//! render), `output` (I/O: syslog, `_bulk`, files, spool, dead letters, workers), `pipeline`
//! (payload -> every output, routing), `inputs` (HTTP ingest, TLS, Event Hubs, pollers),
//! `config` (the service's TOML), `telemetry` (metrics), `cli` (commands).

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
