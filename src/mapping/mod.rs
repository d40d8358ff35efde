//! The mapping engine: mapping files compiled into families, a family selected per record, and
//! the record mapped into a [`MappedEvent`] that both formatters render. Pure: no I/O besides
//! reading the mapping files at load, no clock.

pub mod compile;
pub mod coverage;
mod event_map;
pub mod family;
mod fields;
pub mod geo;
pub mod ops;
pub mod path;
pub mod predicate;
pub mod scratch;
pub mod steps;
pub mod time;
pub mod value;
pub mod xml;

use std::borrow::Cow;
use std::fmt;

use crate::event::{RawRecord, SourceKind};
use crate::format::ecs::{EcsPlan, EcsValues};
use crate::json::{Json, Text};
use compile::{Diagnostic, SourceFile};
pub use family::{EventDef, Family};
use scratch::Scratch;
use time::Timestamp;
use value::Val;

/// Options that change what the engine emits.
#[derive(Debug, Clone, Default)]
pub struct MapOptions {
    /// Put the raw record in ECS `event.original` (always done for unmapped and failed records).
    pub include_original: bool,
    /// Keep the vendor copies (`m365_defender.*`) of columns that are also mapped to ECS core
    /// fields. Elastic's pipelines drop them unless the `preserve_duplicate_custom_fields` tag is
    /// set, and so do we by default.
    pub preserve_duplicates: bool,
    /// GeoIP and ASN databases for the addresses families mark with `<geo>`.
    pub geo: Option<std::sync::Arc<geo::GeoDb>>,
    /// With `geo`: also LEEF keys with each address's country (`srcCountry`, `dstCountry` ...).
    pub geo_leef: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Mapped,
    /// No family claims the record.
    Unmapped(String),
    /// A family claims it but could not map it.
    Failed(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Mapped => "mapped",
            Outcome::Unmapped(_) => "unmapped",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// One record, mapped: what the LEEF and ECS formatters render.
#[derive(Debug, Clone)]
pub struct MappedEvent<'a> {
    pub outcome: Outcome,
    /// Deterministic id of the record (see [`family::record_id`]).
    pub record_id: u128,
    pub family: Option<&'a Family>,
    pub source: Option<SourceKind>,
    /// LEEF EventID, first QID key.
    pub event_id: Cow<'a, str>,
    /// LEEF `cat`, second QID key.
    pub category: Cow<'a, str>,
    pub time: Option<Timestamp>,
    /// QRadar severity 1-10.
    pub severity: u8,
    pub qid: Option<&'a EventDef>,
    /// LEEF attributes after `cat` and `devTime`, keys unique, in mapping order.
    pub leef: Vec<(&'a str, Val<'a>)>,
    /// ECS values by plan slot.
    pub ecs: EcsValues<'a>,
    /// ECS keys known only per record, by dynamic place, sorted.
    pub ecs_dynamic: Vec<Vec<(String, Val<'a>)>>,
    /// Conversions that failed; the fields were left out.
    pub errors: Vec<String>,
    pub plan: &'a EcsPlan,
    pub product: &'a str,
    pub version: &'a str,
}

/// Problems found while loading mapping files, all of them.
#[derive(Debug, thiserror::Error)]
pub struct LoadError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} problem(s) in the mapping files:",
            self.diagnostics.len()
        )?;
        for d in &self.diagnostics {
            writeln!(f, "  {d}")?;
        }
        Ok(())
    }
}

/// The ECS layout of unmapped and failed records.
#[derive(Debug)]
struct GenericPlan {
    plan: EcsPlan,
    timestamp: usize,
    ecs_version: usize,
    error: usize,
    kind: usize,
    code: usize,
    original: usize,
    ingested: usize,
    tags: usize,
}

/// The ECS tag of an event dated when it was received (its record has no time of its own).
pub const RECEIVED_TIME_TAG: &str = "dsm_time_received";

impl GenericPlan {
    fn new() -> Self {
        let mut plan = EcsPlan::default();
        let mut slot = |p: &str| plan.slot(p).unwrap_or_default();
        let timestamp = slot("@timestamp");
        let ecs_version = slot("ecs.version");
        let error = slot("error.message");
        let kind = slot("event.kind");
        let code = slot("event.code");
        let original = slot("event.original");
        let ingested = slot("event.ingested");
        let tags = slot("tags");
        plan.finish();
        GenericPlan {
            plan,
            timestamp,
            ecs_version,
            error,
            kind,
            code,
            original,
            ingested,
            tags,
        }
    }
}

/// Which families to try for a record: those that require its `category`, then the others.
#[derive(Debug, Default)]
struct Dispatch {
    by_category: family::FxMap<String, Vec<usize>>,
    rest: Vec<usize>,
}

impl Dispatch {
    fn new(families: &[Family]) -> Self {
        let mut d = Dispatch::default();
        for (i, f) in families
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.selector.fallback)
        {
            match f.selector.predicate.required_value("category") {
                Some(c) => d.by_category.entry(c.to_string()).or_default().push(i),
                None => d.rest.push(i),
            }
        }
        d
    }
}

/// Every family, compiled and checked together.
#[derive(Debug)]
pub struct MappingSet {
    families: Vec<Family>,
    dispatch: Dispatch,
    generic: GenericPlan,
    version: String,
}

fn set_version(texts: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = texts.iter().collect();
    sorted.sort();
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (name, text) in sorted {
        let base = name.rsplit('/').next().unwrap_or(name);
        for part in [base, text] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    format!("{}+{:016x}", env!("CARGO_PKG_VERSION"), hasher.digest())
}

/// The mapping files compiled into the binary (from `mappings/` at build time).
const EMBEDDED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/embedded_mappings.rs"));

impl MappingSet {
    /// The bundled mapping files.
    pub fn embedded() -> Result<MappingSet, LoadError> {
        MappingSet::from_texts(
            EMBEDDED
                .iter()
                .map(|(n, t)| (format!("mappings/{n}"), (*t).to_string()))
                .collect(),
        )
    }

    /// Every `*.xml` below `dir`.
    pub fn load_dir(dir: &std::path::Path) -> Result<MappingSet, LoadError> {
        let mut files = Vec::new();
        let mut diags = Vec::new();
        collect_xml(dir, &mut files, &mut diags);
        if files.is_empty() && diags.is_empty() {
            diags.push(Diagnostic {
                file: dir.display().to_string(),
                pos: Default::default(),
                element: "directory".into(),
                message: "no *.xml mapping files here".into(),
            });
        }
        if !diags.is_empty() {
            return Err(LoadError { diagnostics: diags });
        }
        files.sort();
        MappingSet::from_texts(files)
    }

    /// Compiles `(file name, text)` pairs.
    pub fn from_texts(texts: Vec<(String, String)>) -> Result<MappingSet, LoadError> {
        let version = set_version(&texts);
        let mut diags = Vec::new();
        let mut files = Vec::new();
        for (name, text) in texts {
            match xml::parse(&text) {
                Ok(root) => match root.name.as_str() {
                    "dsm-mapping" | "field-set" | "column-set" => {
                        files.push(SourceFile { name, root })
                    }
                    other => diags.push(Diagnostic {
                        file: name,
                        pos: root.pos,
                        element: other.to_string(),
                        message:
                            "a mapping file's root is <dsm-mapping>, <field-set> or <column-set>"
                                .into(),
                    }),
                },
                Err((pos, message)) => diags.push(Diagnostic {
                    file: name,
                    pos,
                    element: "xml".into(),
                    message,
                }),
            }
        }
        let (sets, set_diags) = compile::named_sets(&files, "field-set");
        diags.extend(set_diags);
        let (columns, column_diags) = compile::named_sets(&files, "column-set");
        diags.extend(column_diags);
        let mut families: Vec<Family> = Vec::new();
        for f in files.iter().filter(|f| f.root.name == "dsm-mapping") {
            match compile::compile_family(f, &sets, &columns) {
                Ok(fam) => families.push(fam),
                Err(d) => diags.extend(d),
            }
        }
        diags.extend(check_claims(&families));
        if !diags.is_empty() {
            diags.sort();
            return Err(LoadError { diagnostics: diags });
        }
        Ok(MappingSet {
            dispatch: Dispatch::new(&families),
            families,
            generic: GenericPlan::new(),
            version,
        })
    }

    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// Names this set of mapping files: the crate version and a hash of the files' names and
    /// texts, so a dead letter says which mappings failed it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The family that claims a record: a specific one first, then its source's fallback.
    pub fn select<'a>(
        &self,
        kind: SourceKind,
        rec: &'a Json<'a>,
        cache: &mut Scratch,
    ) -> Option<&Family> {
        let specific = rec
            .get("category")
            .and_then(Json::as_str)
            .and_then(|c| self.dispatch.by_category.get(c))
            .map_or(&[][..], Vec::as_slice);
        let candidates = specific.iter().chain(&self.dispatch.rest);
        for &i in candidates {
            if self.families[i].claims(kind, rec, cache) {
                return Some(&self.families[i]);
            }
        }
        self.families
            .iter()
            .find(|f| f.selector.fallback && f.selector.takes(kind))
    }

    /// Maps one record. Never fails: unmapped and failed records become generic events.
    pub fn map<'a>(
        &'a self,
        rec: &'a RawRecord<'a>,
        opts: &MapOptions,
        cache: &mut Scratch,
    ) -> MappedEvent<'a> {
        cache.clear();
        let Some(kind) = rec.source else {
            return self.generic(
                rec,
                Outcome::Unmapped("the payload's shape matches no known Defender API".into()),
            );
        };
        let Some(family) = self.select(kind, &rec.payload, cache) else {
            let what = match rec.payload.get("category").and_then(Json::as_str) {
                Some(c) => format!("no mapping family claims {kind} records of category `{c}`"),
                None => format!("no mapping family claims this {kind} record"),
            };
            return self.generic(rec, Outcome::Unmapped(what));
        };
        match family.map(kind, &rec.payload, opts, cache) {
            Ok(mut ev) => {
                if let (Some(db), false) = (&opts.geo, family.geo.is_empty()) {
                    geo::enrich(db, &family.geo, &mut ev, opts.geo_leef, cache);
                }
                ev
            }
            Err(reason) => self.generic(
                rec,
                Outcome::Failed(format!("family `{}`: {reason}", family.name)),
            ),
        }
    }

    /// The event for a record no family could map: EventID `Unmapped` or `Failed` of category
    /// `Pipeline` (two fixed QIDs), the record's own category, the reason and the raw record as
    /// keys, so nothing is lost.
    fn generic<'a>(&'a self, rec: &'a RawRecord<'a>, outcome: Outcome) -> MappedEvent<'a> {
        let g = &self.generic;
        let reason = match &outcome {
            Outcome::Unmapped(r) | Outcome::Failed(r) => r.clone(),
            Outcome::Mapped => String::new(),
        };
        let category = source_category(rec);
        let event_id = generic_event_id(&outcome);
        let own_time = family::any_time(&rec.payload);
        let time = own_time.or(rec.received);
        let original = rec.payload.to_string();
        let mut ecs = EcsValues::new(g.plan.slot_count());
        if let Some(t) = time {
            ecs.set(g.timestamp, Val::Time(t));
        }
        ecs.set(g.ecs_version, Val::Str(Text::from(compile::ECS_VERSION)));
        ecs.set(g.error, Val::Str(Text::from(reason.clone())));
        ecs.set(g.kind, Val::Str(Text::from("pipeline_error")));
        ecs.set(g.code, Val::Str(category.clone().into()));
        ecs.set(g.original, Val::Str(Text::from(original.clone())));
        let record_id = family::record_id(&[], &rec.payload, &[], &mut Scratch::default());
        let mut leef = vec![
            ("sev", Val::Int(5)),
            ("sourceCategory", Val::Str(category.clone().into())),
            ("reason", Val::Str(Text::from(reason))),
            (
                "inputKind",
                Val::Str(Text::from(rec.source.map_or("unknown", SourceKind::as_str))),
            ),
            ("payload", Val::Str(Text::from(original))),
        ];
        // A record without a time of its own is dated when it was received, and says so: data
        // streams refuse documents without `@timestamp`.
        if let (None, Some(t)) = (own_time, rec.received) {
            ecs.set(g.ingested, Val::Time(t));
            ecs.set(
                g.tags,
                Val::List(vec![Val::Str(Text::checked(RECEIVED_TIME_TAG))]),
            );
            leef.insert(1, ("timeSource", Val::Str(Text::checked("received"))));
        }
        MappedEvent {
            outcome,
            record_id,
            family: None,
            source: rec.source,
            event_id: Cow::Borrowed(event_id),
            category: Cow::Borrowed(GENERIC_CATEGORY),
            time,
            severity: 5,
            qid: None,
            leef,
            ecs,
            ecs_dynamic: Vec::new(),
            errors: Vec::new(),
            plan: &g.plan,
            product: "Defender XDR",
            version: "1.0",
        }
    }
}

/// What a record says it is, for reports on records no family mapped: its category, or else
/// its source kind.
pub fn source_category<'a>(rec: &'a RawRecord<'a>) -> Cow<'a, str> {
    match rec.payload.get("category").and_then(Json::as_str) {
        Some(c) if !c.is_empty() => Cow::Borrowed(c),
        _ => Cow::Borrowed(rec.source.map_or("unknown", SourceKind::as_str)),
    }
}

/// LEEF `cat` of generic events.
pub const GENERIC_CATEGORY: &str = "Pipeline";

/// LEEF EventID of a generic event.
pub fn generic_event_id(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Failed(_) => "Failed",
        _ => "Unmapped",
    }
}

fn collect_xml(
    dir: &std::path::Path,
    files: &mut Vec<(String, String)>,
    diags: &mut Vec<Diagnostic>,
) {
    let io_err = |p: &std::path::Path, e: std::io::Error| Diagnostic {
        file: p.display().to_string(),
        pos: Default::default(),
        element: "file".into(),
        message: format!("cannot read: {e}"),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return diags.push(io_err(dir, e)),
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_xml(&p, files, diags);
        } else if p.extension().is_some_and(|x| x == "xml") {
            match std::fs::read_to_string(&p) {
                Ok(t) => files.push((p.display().to_string(), t)),
                Err(e) => diags.push(io_err(&p, e)),
            }
        }
    }
}

/// Two families must not claim the same records, and a source has at most one fallback.
fn check_claims(families: &[Family]) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for (i, a) in families.iter().enumerate() {
        for b in &families[..i] {
            if a.name == b.name {
                diags.push(claim_diag(
                    a,
                    format!(
                        "family `{}` is also defined in {}:{}",
                        a.name, b.file, b.pos.line
                    ),
                ));
                continue;
            }
            if !a.selector.shares_source(&b.selector) {
                continue;
            }
            let clash = match (a.selector.fallback, b.selector.fallback) {
                (true, true) => true,
                (false, false) => !a.selector.predicate.disjoint(&b.selector.predicate),
                _ => false,
            };
            if clash {
                let what = if a.selector.fallback {
                    "is a fallback for the same source as"
                } else {
                    "may claim the same records as"
                };
                diags.push(claim_diag(
                    a,
                    format!(
                        "family `{}` {what} family `{}` ({}:{})",
                        a.name, b.name, b.file, b.pos.line
                    ),
                ));
            }
        }
    }
    diags
}

fn claim_diag(f: &Family, message: String) -> Diagnostic {
    Diagnostic {
        file: f.file.clone(),
        pos: f.pos,
        element: "dsm-mapping".into(),
        message,
    }
}
