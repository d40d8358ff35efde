//! The service's path for one payload: decode and map it with the mapping set in use, encode each
//! event for every output whose route admits it, hand the batches over, and answer only when
//! every output has them durably (sent or spooled).
//!
//! Events are handed over in chunks ([`CHUNK_EVENTS`], [`CHUNK_BYTES`] per output) while the
//! payload is encoded, and an output's queue holds a few chunks, so a payload that becomes far
//! more output than input (an incident fanned out into 10,000 alerts' events) never sits whole in
//! memory; [`Pipeline::max_output_bytes`] bounds what one payload may become. A payload whose
//! events fit in one chunk per output is taken whole or not at all: one that does not decode is
//! refused before anything is handed over. A larger one that fails part way (a malformed
//! document after good ones, the output limit) keeps what was handed over, every output having
//! the same records, and the answer says how many.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::{
    secret, FileFormat, FramingConfig, FullConfig, OutputConfig, OutputKind, ServiceConfig,
};
use crate::event::SourceKind;
use crate::mapping::time::Timestamp;
use crate::mapping::MappedEvent;
use crate::output::bulk::{BulkAuth, BulkOutput, BulkTarget};
use crate::output::file::FileTarget;
use crate::output::syslog::{Framing, SyslogTarget, TlsSettings};
use crate::output::worker::{
    Batch, Encoding, Endpoint, FullPolicy, OutputHandle, OutputReport, Pending, Refused,
    SpoolSettings,
};
use crate::output::OutputError;
use crate::telemetry::Telemetry;
use crate::translate::{Counts, Translator};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The payload does not decode: where and why.
    #[error("{0}")]
    Malformed(String),
    /// The payload's events would pass [`Pipeline::max_output_bytes`].
    #[error("{0}")]
    TooLarge(String),
    /// An output cannot take events now (its spool is full while the endpoint is down, or its
    /// spool or file cannot be written): try again later.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

/// Which events an output gets.
#[derive(Debug, Clone, Default)]
pub struct Route {
    include_families: Vec<String>,
    exclude_families: Vec<String>,
    include_categories: Vec<String>,
    exclude_categories: Vec<String>,
    include_actions: Vec<String>,
    exclude_actions: Vec<String>,
    /// LEEF keys and ECS paths (a path drops everything below it) left out of every event.
    drop_fields: Vec<String>,
}

impl Route {
    fn from_config(o: &OutputConfig) -> Route {
        Route {
            include_families: o.include_families.clone(),
            exclude_families: o.exclude_families.clone(),
            include_categories: o.include_categories.clone(),
            exclude_categories: o.exclude_categories.clone(),
            include_actions: o.include_actions.clone(),
            exclude_actions: o.exclude_actions.clone(),
            drop_fields: o.drop_fields.clone(),
        }
    }

    /// The event without the fields this output drops (`None`: nothing to drop).
    pub fn prune<'a>(&self, ev: &MappedEvent<'a>) -> Option<MappedEvent<'a>> {
        if self.drop_fields.is_empty() {
            return None;
        }
        let mut out = ev.clone();
        out.leef
            .retain(|(k, _)| !self.drop_fields.iter().any(|d| d == k));
        let mut slots = Vec::new();
        for d in &self.drop_fields {
            let (s, dynamics) = ev.plan.slots_at(d);
            slots.extend(s);
            for place in dynamics {
                if let Some(entries) = out.ecs_dynamic.get_mut(place) {
                    entries.clear();
                }
            }
            // A key known only per record, below a place the plan has (`m365_defender.x.y`).
            if let Some((parent, key)) = d.rsplit_once('.') {
                if let Some(entries) = ev
                    .plan
                    .dynamic_at(parent)
                    .and_then(|place| out.ecs_dynamic.get_mut(place))
                {
                    entries.retain(|(k, _)| k != key);
                }
            }
        }
        if !slots.is_empty() {
            out.ecs.retain(|slot| !slots.contains(&slot));
        }
        Some(out)
    }

    /// Family by name (`none` for records no family maps), category as LEEF `cat`, action as
    /// the LEEF EventID (the ActionType for Streaming API tables).
    pub fn admits(&self, ev: &MappedEvent) -> bool {
        self.filters(ev).is_none()
    }

    /// Which rule keeps the event out (`family`, `category`, `action`), if one does.
    pub fn filters(&self, ev: &MappedEvent) -> Option<&'static str> {
        let family = ev.family.map_or("none", |f| f.name.as_str());
        let pass = |value: &str, include: &[String], exclude: &[String]| {
            (include.is_empty() || include.iter().any(|v| v == value))
                && !exclude.iter().any(|v| v == value)
        };
        if !pass(family, &self.include_families, &self.exclude_families) {
            Some("family")
        } else if !pass(
            &ev.category,
            &self.include_categories,
            &self.exclude_categories,
        ) {
            Some("category")
        } else if !pass(&ev.event_id, &self.include_actions, &self.exclude_actions) {
            Some("action")
        } else {
            None
        }
    }
}

pub struct RoutedOutput {
    pub handle: OutputHandle,
    pub route: Route,
}

/// What an ingest took.
#[derive(Debug, Default)]
pub struct Ingested {
    /// Records handed to every output (all of the payload's, unless it failed part way).
    pub records: u64,
    pub counts: Counts,
}

/// Events handed over to an output at a time, at most: by count and by bytes.
pub const CHUNK_EVENTS: usize = 1000;
pub const CHUNK_BYTES: usize = 4 << 20;

/// What encoding a payload left: the outputs' answers to wait for, what was taken, and why it
/// stopped early, if it did.
struct Encoded {
    pending: Vec<Pending>,
    taken: Ingested,
    /// Events kept out by a route, by output and reason.
    filtered: Vec<[u64; 3]>,
    stopped: Option<IngestError>,
}

pub struct Pipeline {
    translator: RwLock<Arc<Translator>>,
    pub outputs: Vec<RoutedOutput>,
    pub telemetry: Telemetry,
    /// Most bytes of events one payload may become, over all outputs.
    pub max_output_bytes: usize,
    /// Payloads encoded at once. An encoding waits (on a blocking thread) while an output's
    /// queue is full, and the outputs' own file work needs blocking threads too: without this
    /// bound, enough waiting encodings would take every blocking thread and stop the outputs.
    encoders: tokio::sync::Semaphore,
}

/// Payloads encoded at once, at most (see [`Pipeline`]'s `encoders`).
const ENCODERS: usize = 8;

impl Pipeline {
    pub fn new(translator: Translator, outputs: Vec<RoutedOutput>) -> Pipeline {
        let telemetry = Telemetry::default();
        telemetry.set_mapping_version(translator.mappings.version());
        Pipeline {
            translator: RwLock::new(Arc::new(translator)),
            outputs,
            telemetry,
            max_output_bytes: 256 << 20,
            encoders: tokio::sync::Semaphore::new(ENCODERS),
        }
    }

    /// The mapping set in use; a payload keeps the one it started with through a reload.
    pub fn translator(&self) -> Arc<Translator> {
        match self.translator.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace_translator(&self, t: Translator) {
        self.telemetry.set_mapping_version(t.mappings.version());
        let mut slot = match self.translator.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(t);
    }

    /// Takes one payload: decoded and encoded off the async threads, handed to every output in
    /// chunks, and returns once every output has what was handed over sent or spooled. The body
    /// is shared, so a caller that tries again (a full spool) does not copy it.
    pub async fn ingest(
        self: &Arc<Self>,
        text: Arc<String>,
        origin: &str,
        input: &'static str,
        forced: Option<SourceKind>,
    ) -> Result<Ingested, IngestError> {
        let me = self.clone();
        let origin: Arc<str> = Arc::from(origin);
        let bytes = text.len() as u64;
        let permit = self
            .encoders
            .acquire()
            .await
            .map_err(|e| IngestError::Failed(format!("translation stopped: {e}")))?;
        let encoded = tokio::task::spawn_blocking(move || me.encode(&text, &origin, forced))
            .await
            .map_err(|e| IngestError::Failed(format!("translation stopped: {e}")))?;
        drop(permit);
        let Encoded {
            pending,
            taken,
            filtered,
            stopped,
        } = encoded;
        let mut first_error = None;
        for w in pending {
            if let Err(e) = w.wait().await {
                first_error.get_or_insert(e);
            }
        }
        self.telemetry
            .add("dsm_input_bytes_total", &[("input", input)], bytes);
        for (family, n) in &taken.counts.by_family {
            let (family, outcome) = match family.strip_prefix('(') {
                Some(rest) => ("none", rest.split(')').next().unwrap_or("unmapped")),
                None => (family.as_str(), "mapped"),
            };
            self.telemetry.add(
                "dsm_records_total",
                &[("input", input), ("family", family), ("outcome", outcome)],
                *n,
            );
        }
        for (o, counts) in self.outputs.iter().zip(&filtered) {
            for (reason, n) in ["family", "category", "action"].into_iter().zip(counts) {
                if *n > 0 {
                    self.telemetry.add(
                        "dsm_output_filtered_total",
                        &[("output", &o.handle.name), ("reason", reason)],
                        *n,
                    );
                }
            }
        }
        match (first_error, stopped) {
            (Some(Refused::Unavailable(e)), _) => Err(IngestError::Unavailable(e)),
            (Some(Refused::Failed(e)), _) => Err(IngestError::Failed(e)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(taken),
        }
    }

    /// Encodes the payload's events for every output, handing each output's batch over
    /// whenever it reaches a chunk (waiting while the output's queue is full).
    fn encode(&self, text: &str, origin: &Arc<str>, forced: Option<SourceKind>) -> Encoded {
        let t = self.translator();
        let mut batches: Vec<Batch> = self.outputs.iter().map(|_| Batch::default()).collect();
        let mut filtered = vec![[0u64; 3]; self.outputs.len()];
        let mut pending = Vec::new();
        let mut taken = Ingested::default();
        // Bytes handed over or waiting in `batches`; past the limit no record is encoded.
        let mut output_bytes = 0usize;
        let mut over = false;
        let received = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| Timestamp::from_unix_nanos(d.as_nanos() as i64));
        let counts = &mut taken.counts;
        let decoded = t.each_event_received(text, origin, forced, received, counts, |rec, ev| {
            if over || output_bytes > self.max_output_bytes {
                over = true;
                return;
            }
            taken.records += 1;
            for (i, (o, b)) in self.outputs.iter().zip(batches.iter_mut()).enumerate() {
                if let Some(reason) = o.route.filters(ev) {
                    let k = match reason {
                        "family" => 0,
                        "category" => 1,
                        _ => 2,
                    };
                    filtered[i][k] += 1;
                    continue;
                }
                let pruned = o.route.prune(ev);
                let ev = pruned.as_ref().unwrap_or(ev);
                let before = b.bytes;
                b.add(&o.handle.encoding, ev, rec, &t.render, t.mappings.version());
                output_bytes += b.bytes - before;
                if b.len() >= CHUNK_EVENTS || b.bytes >= CHUNK_BYTES {
                    pending.push(o.handle.submit_blocking(std::mem::take(b)));
                }
            }
        });
        let stopped = match decoded {
            // Nothing handed over yet: the payload is refused whole, as if never sent.
            Err(e) if pending.is_empty() => {
                return Encoded {
                    pending,
                    taken: Ingested::default(),
                    filtered: vec![[0; 3]; self.outputs.len()],
                    stopped: Some(IngestError::Malformed(e.to_string())),
                };
            }
            Err(e) => Some(IngestError::Malformed(format!(
                "{e}; the {} records before it were accepted",
                taken.records
            ))),
            Ok(()) if over => Some(IngestError::TooLarge(format!(
                "the payload's events take more than {} bytes (max_payload_output_bytes); the first {} records were accepted, the {} after them were not",
                self.max_output_bytes,
                taken.records,
                taken.counts.total() - taken.records
            ))),
            Ok(()) => None,
        };
        for (o, b) in self.outputs.iter().zip(batches.iter_mut()) {
            if !b.is_empty() {
                pending.push(o.handle.submit_blocking(std::mem::take(b)));
            }
        }
        Encoded {
            pending,
            taken,
            filtered,
            stopped,
        }
    }

    /// Stops every output after it drained what it can, and reports.
    pub async fn close(self) -> Vec<OutputReport> {
        let mut reports = Vec::new();
        for o in self.outputs {
            reports.push(o.handle.close().await);
        }
        reports
    }
}

/// Checks each output's route against the mapping set: a family or category no mapping has
/// would silently keep events out (or let none in), so it is an error naming the key. Actions
/// (EventIDs) not in any event map are only warned about: a family may pass on ids its map
/// does not list.
pub fn check_routes(cfg: &ServiceConfig, set: &crate::mapping::MappingSet) -> Result<(), String> {
    let families: Vec<&str> = set
        .families()
        .iter()
        .map(|f| f.name.as_str())
        .chain(["none"])
        .collect();
    let mut categories: Vec<&str> = set
        .families()
        .iter()
        .map(|f| f.event_category.as_str())
        .chain([crate::mapping::GENERIC_CATEGORY])
        .collect();
    categories.sort_unstable();
    categories.dedup();
    for (i, o) in cfg.outputs.iter().enumerate() {
        let at = format!("outputs[{i}] ({})", o.name);
        for (key, names, known) in [
            ("include_families", &o.include_families, &families),
            ("exclude_families", &o.exclude_families, &families),
            ("include_categories", &o.include_categories, &categories),
            ("exclude_categories", &o.exclude_categories, &categories),
        ] {
            if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
                return Err(format!(
                    "{at}.{key}: `{bad}` is not one the mappings have (they have: {})",
                    known.join(", ")
                ));
            }
        }
        for action in o.include_actions.iter().chain(&o.exclude_actions) {
            let listed = set.families().iter().any(|f| {
                f.event_map
                    .lookup(action, "")
                    .is_some_and(|d| d.id == *action)
            }) || [
                crate::mapping::generic_event_id(&crate::mapping::Outcome::Failed(String::new())),
                "Unmapped",
            ]
            .contains(&action.as_str());
            if !listed {
                tracing::warn!(output = %o.name, %action, "a route names an action (EventID) no event map lists; it matches only events of that exact id");
            }
        }
    }
    Ok(())
}

/// Starts every configured output (on the current runtime), with its spool and dead letters
/// under the data directory.
pub fn start_outputs(cfg: &ServiceConfig) -> Result<Vec<RoutedOutput>, OutputError> {
    let mut outputs = Vec::new();
    for o in &cfg.outputs {
        let bad = |why: String| OutputError::Config(format!("outputs ({}): {why}", o.name));
        let (encoding, endpoint) = match o.kind {
            OutputKind::Syslog => {
                let mut t = SyslogTarget::parse(o.url.as_deref().unwrap_or_default())?;
                if let Some(f) = o.framing {
                    t.framing = match f {
                        FramingConfig::Lf => Framing::Lf,
                        FramingConfig::OctetCounting => Framing::OctetCounting,
                    };
                }
                if let Some(m) = o.max_message_size {
                    t.max_message_size = m;
                }
                if let Some(r) = o.retries {
                    t.retries = r;
                }
                if let Some(secs) = o.timeout_seconds {
                    t.timeout = Duration::from_secs(secs);
                }
                t.tls = TlsSettings {
                    ca_file: o.tls_ca.clone(),
                    client_cert: o.tls_cert.clone(),
                    client_key: o.tls_key.clone(),
                    server_name: o.tls_server_name.clone(),
                };
                t.check().map_err(|e| bad(e.to_string()))?;
                (
                    Encoding::Leef {
                        max: t.max_message_size,
                    },
                    Endpoint::Syslog(t),
                )
            }
            OutputKind::Bulk => {
                let mut t = BulkTarget::new(o.url.as_deref().unwrap_or_default())?;
                t.auth = bulk_auth(o).map_err(bad)?;
                if let Some(ns) = &o.namespace {
                    t.namespace = ns.clone();
                }
                t.ca_file = o.ca.clone();
                if let Some(n) = o.max_docs {
                    t.max_docs = n.max(1);
                }
                if let Some(n) = o.max_bytes {
                    t.max_bytes = n;
                }
                if let Some(g) = o.gzip {
                    t.gzip = g;
                }
                if let Some(r) = o.retries {
                    t.retries = r;
                }
                if let Some(secs) = o.timeout_seconds {
                    t.timeout = Duration::from_secs(secs);
                }
                t.pipeline = match (o.elastic_integration, &o.pipeline) {
                    (Some(true), None) => Some("_none".into()),
                    _ => o.pipeline.clone(),
                };
                let enc = Encoding::Bulk {
                    namespace: t.namespace.clone(),
                };
                (enc, Endpoint::Bulk(Box::new(BulkOutput::new(t)?)))
            }
            OutputKind::File => {
                let t = FileTarget {
                    path: o.path.clone().unwrap_or_default(),
                    max_bytes: o.rotate_bytes.unwrap_or(100 << 20),
                    keep: o.keep_files.unwrap_or(5),
                };
                let enc = match o.format.unwrap_or(FileFormat::Ecs) {
                    FileFormat::Leef => Encoding::Leef { max: usize::MAX },
                    FileFormat::Ecs => Encoding::Ecs,
                };
                (enc, Endpoint::File(t))
            }
        };
        let spool = (o.kind != OutputKind::File).then(|| {
            let full = match o.spool_full.unwrap_or(FullConfig::Block) {
                FullConfig::Block => FullPolicy::Block,
                FullConfig::DropOldest => FullPolicy::DropOldest,
            };
            let max = o.spool_max_bytes.unwrap_or(1 << 30);
            let mut spool = SpoolSettings::in_data_dir(&cfg.data_dir, &o.name, max, full);
            if let Some(b) = o.spool_segment_bytes {
                spool.segment_bytes = b;
            }
            spool
        });
        let (handle, _) = OutputHandle::start(
            o.name.clone(),
            encoding,
            endpoint,
            spool,
            Some(cfg.data_dir.join("dead-letters")),
            4,
        )?;
        outputs.push(RoutedOutput {
            handle,
            route: Route::from_config(o),
        });
    }
    Ok(outputs)
}

/// A bulk output's credentials, from the environment or files.
pub fn bulk_auth(o: &OutputConfig) -> Result<BulkAuth, String> {
    let password = secret(
        o.password_env.as_deref(),
        o.password_file.as_deref(),
        "password",
    )?;
    let api_key = secret(
        o.api_key_env.as_deref(),
        o.api_key_file.as_deref(),
        "api_key",
    )?;
    let token = secret(o.token_env.as_deref(), o.token_file.as_deref(), "token")?;
    match (&o.user, password, api_key, token) {
        (None, None, None, None) => Ok(BulkAuth::None),
        (Some(user), Some(password), None, None) => Ok(BulkAuth::Basic {
            user: user.clone(),
            password,
        }),
        (None, None, Some(k), None) => Ok(BulkAuth::ApiKey(k)),
        (None, None, None, Some(tok)) => Ok(BulkAuth::Bearer(tok)),
        _ => Err("give user with a password, an API key, or a token".into()),
    }
}
