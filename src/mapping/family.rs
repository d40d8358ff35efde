//! A compiled family and how it maps one record.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use regex::Regex;

use super::ops::Op;
use super::path::Path;
use super::predicate::Predicate;
use super::scratch::Scratch;
use super::steps::{snake_case, Step};
use super::time::Timestamp;
use super::value::Val;
use super::xml::Pos;
use super::{MapOptions, MappedEvent, Outcome};
use crate::event::SourceKind;
use crate::format::ecs::{EcsPlan, EcsValues};
use crate::json::{Json, Text};

/// Which records a family claims.
#[derive(Debug)]
pub struct Selector {
    /// Empty: any source kind.
    pub sources: Vec<SourceKind>,
    pub predicate: Predicate,
    /// Claims what no other family of its sources claims.
    pub fallback: bool,
}

impl Selector {
    pub fn takes(&self, kind: SourceKind) -> bool {
        self.sources.is_empty() || self.sources.contains(&kind)
    }

    pub fn shares_source(&self, other: &Selector) -> bool {
        self.sources.is_empty()
            || other.sources.is_empty()
            || self.sources.iter().any(|s| other.sources.contains(s))
    }
}

#[derive(Debug)]
pub enum Source {
    Path(Path),
    /// A member of the indexed object (the `<carry>` path), then the rest of the path.
    Member(usize, Path),
    Const(Text<'static>),
    /// Text with `{path}` holes; absent when any hole has no value.
    Template(Vec<Piece>),
    /// Nanoseconds from the first timestamp to the second (ECS `event.duration`).
    Duration(Path, Path),
}

#[derive(Debug)]
pub enum Piece {
    Text(String),
    Hole(Path),
}

/// Word-at-a-time multiplicative hash (the rustc "Fx" scheme): column names are 10-40 bytes and
/// come from the mapping files, so SipHash's flooding resistance buys nothing here and its cost
/// showed as the top item of the mapping profile. Written here because it is a dozen lines.
#[derive(Default)]
pub struct FxHasher(u64);

/// A map keyed by names from the mapping files (records only look keys up, never add them).
pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
}

/// What one member name of the indexed object is for: an argument of rules, a vendor column.
#[derive(Debug, Default, Clone, Copy)]
pub struct Member {
    pub arg: Option<usize>,
    pub column: Option<usize>,
    /// A rule copies this column whole to an ECS field outside the vendor namespace, so its
    /// vendor copy is a duplicate (left out unless asked for, as Elastic's pipelines do).
    pub core: bool,
}

/// The members of the `<carry>` object, looked up once per record.
#[derive(Debug, Default)]
pub struct MemberIndex {
    pub keys: FxMap<String, Member>,
    pub args: usize,
}

/// One `<field>` (or header element) compiled.
#[derive(Debug)]
pub struct Rule {
    pub sources: Vec<Source>,
    pub regex: Option<(Regex, usize)>,
    pub steps: Vec<Step>,
    pub default: Option<String>,
    /// The condition and its id among the family's conditions (rules of one `<group>` share
    /// it, so it is evaluated once per record).
    pub when: Option<(Predicate, usize)>,
    pub required: bool,
    /// LEEF key and its index among the family's keys (for a per-record "already written" mark).
    pub leef: Option<(String, usize)>,
    pub ecs: Vec<usize>,
    pub append: Vec<usize>,
    /// The ECS paths of `ecs` and `append`, to tell core targets from vendor ones.
    pub targets: Vec<String>,
    /// The path or constant, for diagnostics.
    pub what: String,
    pub file: String,
    pub pos: Pos,
}

pub(super) enum Eval<'a> {
    Skipped,
    Absent,
    Value(Val<'a>),
}

impl Rule {
    pub(super) fn eval<'a>(
        &'a self,
        rec: &'a Json<'a>,
        args: &[Option<&'a Json<'a>>],
        cache: &mut Scratch,
        errors: &mut Vec<String>,
    ) -> Eval<'a> {
        if let Some((w, id)) = &self.when {
            let holds = match cache.condition(*id) {
                Some(known) => known,
                None => {
                    let v = w.eval(rec, cache);
                    cache.remember_condition(*id, v);
                    v
                }
            };
            if !holds {
                return Eval::Skipped;
            }
        }
        let mut v = None;
        for s in &self.sources {
            v = match s {
                Source::Path(p) => p.resolve(rec, cache),
                Source::Member(i, rest) => match args.get(*i).copied().flatten() {
                    Some(v) if rest.is_empty() => Val::from_json(v),
                    Some(v) => rest.resolve(v, cache),
                    None => None,
                },
                Source::Const(c) => Some(Val::Str(c.reborrow())),
                Source::Template(pieces) => fill(pieces, rec, cache),
                Source::Duration(from, to) => {
                    let at = |p: &Path, cache: &mut Scratch| {
                        p.resolve(rec, cache)
                            .and_then(|v| Timestamp::parse(&v.to_text()))
                    };
                    match (at(from, cache), at(to, cache)) {
                        (Some(a), Some(b)) => {
                            Some(Val::Int(b.unix_nanos().saturating_sub(a.unix_nanos())))
                        }
                        _ => None,
                    }
                }
            };
            if v.is_some() {
                break;
            }
        }
        if let (Some((re, group)), Some(val)) = (&self.regex, v.as_ref()) {
            let mut capture = |x: &Val| {
                cache
                    .capture(re, *group, &x.to_text())
                    .map(|m| Val::Str(Text::from(m)))
            };
            v = match val {
                Val::List(items) => {
                    let hits: Vec<Val> = items.iter().filter_map(capture).collect();
                    (!hits.is_empty()).then_some(Val::List(hits))
                }
                one => capture(one),
            };
        }
        if v.is_none() {
            v = self.default.as_deref().map(|d| Val::Str(Text::from(d)));
        }
        match self.converted(&self.steps, v, errors) {
            Some(x) => Eval::Value(x),
            None => Eval::Absent,
        }
    }

    /// `v` through `steps` (this rule's, or their copy in `Family::op_steps`). A step that fails
    /// leaves the value out and records an error naming the rule.
    fn converted<'a>(
        &self,
        steps: &[Step],
        mut v: Option<Val<'a>>,
        errors: &mut Vec<String>,
    ) -> Option<Val<'a>> {
        for step in steps {
            v = match step.apply(v?) {
                Ok(next) => next,
                Err(e) => {
                    self.conversion_failed(e, errors);
                    return None;
                }
            };
        }
        v
    }

    /// Records why a conversion failed, naming the rule's place. Cold and out of line, as
    /// `steps::not_a` is: it would otherwise sit in the per-rule loop.
    #[cold]
    #[inline(never)]
    fn conversion_failed(&self, e: String, errors: &mut Vec<String>) {
        errors.push(format!(
            "{}:{}:{}: {}: {e}",
            self.file, self.pos.line, self.pos.column, self.what
        ));
    }

    fn value<'a>(
        &'a self,
        rec: &'a Json<'a>,
        args: &[Option<&'a Json<'a>>],
        cache: &mut Scratch,
        errors: &mut Vec<String>,
    ) -> Option<Val<'a>> {
        match self.eval(rec, args, cache, errors) {
            Eval::Value(v) => Some(v),
            _ => None,
        }
    }
}

fn fill<'a>(pieces: &[Piece], rec: &'a Json<'a>, cache: &mut Scratch) -> Option<Val<'a>> {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Hole(path) => out.push_str(&path.resolve(rec, cache)?.to_text()),
        }
    }
    Some(Val::Str(Text::from(out)))
}

/// QRadar and ECS classification of one event id.
#[derive(Debug, Clone)]
pub struct EventDef {
    /// The LEEF EventID: the mapped event name, or for the `<default>` the id every unlisted
    /// event is sent under, so that QRadar has a QID for each event it can receive.
    pub id: String,
    /// `None`: any category.
    pub category: Option<String>,
    pub qid_name: String,
    pub description: Option<String>,
    pub severity: u8,
    pub low_level_category: u32,
    pub ecs_category: Vec<Text<'static>>,
    pub ecs_type: Vec<Text<'static>>,
}

#[derive(Debug)]
pub struct EventMap {
    pub by_id: FxMap<String, Vec<EventDef>>,
    pub default: Option<EventDef>,
}

impl EventMap {
    pub fn is_default(&self, def: &EventDef) -> bool {
        self.default.as_ref().is_some_and(|d| std::ptr::eq(d, def))
    }

    /// The entry for (EventID, category): exact category first, then any category, then default.
    pub fn lookup(&self, id: &str, category: &str) -> Option<&EventDef> {
        let list = self.by_id.get(id);
        list.and_then(|l| l.iter().find(|d| d.category.as_deref() == Some(category)))
            .or_else(|| list.and_then(|l| l.iter().find(|d| d.category.is_none())))
            .or(self.default.as_ref())
    }
}

/// `<carry>`: every member of an object carried into the vendor namespace, known columns to
/// their dictionary place (with conversions), others under their snake_case name.
#[derive(Debug)]
pub struct Carry {
    pub path: Path,
    pub dynamic: Option<usize>,
    /// Dictionary columns: ECS slot and conversions; `MemberIndex` points here.
    pub columns: Vec<(usize, Vec<Step>)>,
    pub leef: bool,
    /// Unknown members keep their own names instead of snake_case ones.
    pub keep_names: bool,
}

#[derive(Debug)]
pub struct Family {
    pub name: String,
    pub file: String,
    pub pos: Pos,
    pub product: String,
    pub version: String,
    pub selector: Selector,
    pub event_name: Rule,
    /// LEEF `cat`, the second key of the QID map: fixed per family.
    pub event_category: String,
    pub device_time: Rule,
    pub rules: Vec<Rule>,
    /// The rules as the per-record loop reads them, with their ECS slots and LEEF key names.
    pub ops: Vec<Op>,
    pub op_slots: Vec<u32>,
    pub op_steps: Vec<Step>,
    pub leef_names: Vec<String>,
    pub event_map: EventMap,
    pub carry: Option<Carry>,
    /// What identifies one record for de-duplication downstream (`<record-id>`: components,
    /// each a list of alternatives); empty: the whole record.
    pub record_id: Vec<Vec<Source>>,
    /// How many distinct LEEF keys the rules write.
    pub leef_keys: usize,
    pub members: MemberIndex,
    pub plan: EcsPlan,
    pub timestamp_slot: usize,
    pub ecs_version_slot: usize,
    pub category_slot: usize,
    pub type_slot: usize,
    pub original_slot: usize,
    pub error_slot: usize,
    /// Addresses to enrich with GeoIP and ASN data (`<geo ip="...">`).
    pub geo: Vec<crate::mapping::geo::GeoSlots>,
}

impl Family {
    /// The LEEF keys the family's fields write, sorted.
    pub fn leef_key_names(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.leef_names.iter().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    pub fn claims<'a>(&self, kind: SourceKind, rec: &'a Json<'a>, cache: &mut Scratch) -> bool {
        self.selector.takes(kind) && self.selector.predicate.eval(rec, cache)
    }

    /// Maps a record this family claims. `Failed` when a required field or the event time is
    /// missing; the caller then emits the generic event.
    pub fn map<'a>(
        &'a self,
        source: SourceKind,
        rec: &'a Json<'a>,
        opts: &MapOptions,
        cache: &mut Scratch,
    ) -> Result<MappedEvent<'a>, String> {
        cache.clear();
        let mut errors = Vec::new();
        let mut args: Vec<Option<&'a Json<'a>>> = vec![None; self.members.args];
        // The carried object's members resolve through the family's shape in `cache`, which
        // the carry loop below reads again for each member's place.
        let carried = match self.carry.as_ref().and_then(|c| c.path.node(rec)) {
            Some(Json::Object(obj)) => obj.as_slice(),
            _ => &[],
        };
        let shape_id = self as *const Family as usize;
        if !carried.is_empty() {
            let shape = cache.shape(shape_id);
            for (i, (k, v)) in carried.iter().enumerate() {
                let (m, _) = shape.resolve(i, k, |name| {
                    self.members.keys.get(name).copied().unwrap_or_default()
                });
                if let Some(a) = m.arg {
                    args[a] = Some(v);
                }
            }
        }
        let time = match self.device_time.value(rec, &args, cache, &mut errors) {
            Some(Val::Time(t)) => t,
            _ => {
                return Err(format!(
                    "no event time at `{}`{}",
                    self.device_time.what,
                    errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ))
            }
        };
        let text_of =
            |r: &'a Rule, cache: &mut Scratch, errors: &mut Vec<String>| -> Cow<'a, str> {
                match r.value(rec, &args, cache, errors) {
                    Some(Val::Str(s)) => s.into_cow(),
                    Some(other) => Cow::Owned(other.to_text().into_owned()),
                    None => Cow::Borrowed(""),
                }
            };
        let event_id = text_of(&self.event_name, cache, &mut errors);
        let category = Cow::Borrowed(self.event_category.as_str());
        if event_id.is_empty() {
            return Err(format!("no event name at `{}`", self.event_name.what));
        }
        let record_id = record_id(&self.record_id, rec, &args, cache);
        let mut ecs = EcsValues::new(self.plan.slot_count());
        let mut leef: Vec<(&'a str, Val<'a>)> = Vec::with_capacity(self.leef_keys + 4);
        let mut leef_seen = vec![false; self.leef_keys];
        // A field that sets event.category/event.type replaces the event map's words; fields
        // that append to them add to those words.
        let mut ruled = (false, false);
        for (i, op) in self.ops.iter().enumerate() {
            if op.when != Op::NONE && cache.condition(usize::from(op.when)) == Some(false) {
                continue;
            }
            let v = if op.member == Op::GENERAL {
                match self.rules[i].eval(rec, &args, cache, &mut errors) {
                    Eval::Value(v) => Some(v),
                    Eval::Absent => None,
                    Eval::Skipped => continue,
                }
            } else {
                let v = args
                    .get(op.member as usize)
                    .copied()
                    .flatten()
                    .and_then(Val::from_json);
                match op.step_count {
                    0 => v,
                    n => {
                        let steps = &self.op_steps[op.steps as usize..][..usize::from(n)];
                        self.rules[i].converted(steps, v, &mut errors)
                    }
                }
            };
            let Some(v) = v else {
                if op.required {
                    let rule = &self.rules[i];
                    return Err(format!(
                        "required field `{}` ({}:{}) is missing",
                        rule.what, rule.file, rule.pos.line
                    ));
                }
                continue;
            };
            let slots = &self.op_slots[op.slots as usize..];
            // Most rules write one ECS field and nothing else: no list to append to, no LEEF
            // key, so no copies to count.
            if op.ecs == 1 && op.append == 0 && op.leef == Op::NONE {
                let slot = slots[0] as usize;
                if !ecs.is_set(slot) {
                    ruled.0 |= slot == self.category_slot;
                    ruled.1 |= slot == self.type_slot;
                    ecs.set(slot, v);
                }
                continue;
            }
            let (set, append) =
                slots[..usize::from(op.ecs) + usize::from(op.append)].split_at(usize::from(op.ecs));
            for &slot in append {
                ecs.append(slot as usize, &v);
            }
            // The value is cloned for all but the last place it goes to.
            let leef_key = (op.leef != Op::NONE && !leef_seen[usize::from(op.leef)])
                .then_some(usize::from(op.leef));
            let mut left = set.iter().filter(|&&s| !ecs.is_set(s as usize)).count()
                + usize::from(leef_key.is_some());
            let mut val = Some(v);
            let mut give = |left: &mut usize| {
                *left -= 1;
                if *left == 0 {
                    val.take()
                } else {
                    val.clone()
                }
            };
            for &slot in set {
                let slot = slot as usize;
                if !ecs.is_set(slot) {
                    ruled.0 |= slot == self.category_slot;
                    ruled.1 |= slot == self.type_slot;
                    if let Some(x) = give(&mut left) {
                        ecs.set(slot, x);
                    }
                }
            }
            if let Some(k) = leef_key {
                if let Some(x) = give(&mut left) {
                    leef_seen[k] = true;
                    leef.push((self.leef_names[k].as_str(), x));
                }
            }
        }
        let def = self.event_map.lookup(&event_id, &category);
        let mut event_id = event_id;
        if let Some(d) = def.filter(|d| self.event_map.is_default(d) && d.id != *event_id) {
            leef.push(("EventName", Val::Str(event_id.into())));
            event_id = Cow::Borrowed(d.id.as_str());
        }
        let severity = match leef.iter().find(|(k, _)| *k == "sev").map(|(_, v)| v) {
            Some(Val::Int(n)) => (*n).clamp(1, 10) as u8,
            Some(other) => other
                .to_text()
                .trim()
                .parse::<u8>()
                .map_or(5, |n| n.clamp(1, 10)),
            None => {
                let s = def.map_or(5, |d| d.severity);
                leef.insert(0, ("sev", Val::Int(i64::from(s))));
                s
            }
        };
        if let Some(d) = def {
            let words = |w: &'a [Text<'static>]| {
                Val::List(w.iter().map(|s| Val::Str(s.reborrow())).collect())
            };
            for (ruled, slot, w) in [
                (ruled.0, self.category_slot, &d.ecs_category),
                (ruled.1, self.type_slot, &d.ecs_type),
            ] {
                if ruled || w.is_empty() {
                    continue;
                }
                if ecs.is_set(slot) {
                    ecs.append(slot, &words(w));
                } else {
                    ecs.set(slot, words(w));
                }
            }
        }
        ecs.set(self.timestamp_slot, Val::Time(time));
        ecs.set(
            self.ecs_version_slot,
            Val::Str(Text::checked(super::compile::ECS_VERSION)),
        );
        if opts.include_original {
            ecs.set(self.original_slot, Val::Str(Text::from(rec.to_string())));
        }
        let mut dynamic: Vec<Vec<(String, Val<'a>)>> = vec![Vec::new(); self.plan.dynamic_count()];
        if let (Some(carry), false) = (&self.carry, carried.is_empty()) {
            let shape = cache.shape(shape_id);
            for (i, (k, v)) in carried.iter().enumerate() {
                let (member, snake) = shape.entry(i);
                let k = k.as_ref();
                let duplicate = member.core && !opts.preserve_duplicates;
                if k.starts_with("__UDI_") || (duplicate && !carry.leef) {
                    continue;
                }
                let Some(val) = Val::from_json(v) else {
                    continue;
                };
                if carry.leef {
                    if let Some(key) = carried_leef_key(k, &leef) {
                        leef.push((key, val.clone()));
                    }
                }
                if duplicate {
                    continue;
                }
                if let Some((slot, steps)) = member.column.and_then(|c| carry.columns.get(c)) {
                    if !ecs.is_set(*slot) {
                        if let Some(converted) = convert_column(val, steps, k, &mut errors) {
                            ecs.set(*slot, converted);
                        }
                    }
                } else if let Some(d) = carry.dynamic {
                    let name = if carry.keep_names {
                        k.to_string()
                    } else {
                        snake.map_or_else(|| snake_case(k), str::to_string)
                    };
                    // Elasticsearch refuses an empty field name, and reads dots as objects
                    // (`a.b` would collide with an object `a`): such columns are left out, and
                    // dots become `_`.
                    if name.trim().is_empty() {
                        continue;
                    }
                    let name = if name.contains('.') {
                        name.replace('.', "_")
                    } else {
                        name
                    };
                    dynamic[d].push((name, val));
                }
            }
        }
        for d in &mut dynamic {
            d.sort_by(|a, b| a.0.cmp(&b.0));
            d.dedup_by(|b, a| a.0 == b.0);
        }
        if !errors.is_empty() {
            let list = errors
                .iter()
                .map(|e| Val::Str(Text::from(e.clone())))
                .collect();
            ecs.set(self.error_slot, Val::List(list));
        }
        Ok(MappedEvent {
            outcome: Outcome::Mapped,
            record_id,
            family: Some(self),
            source: Some(source),
            event_id,
            category,
            time: Some(time),
            severity,
            qid: def,
            leef,
            ecs,
            ecs_dynamic: dynamic,
            errors,
            plan: &self.plan,
            product: &self.product,
            version: &self.version,
        })
    }
}

/// The LEEF key that carries the record id.
pub const RECORD_ID_KEY: &str = "dsmId";

/// LEEF attributes IBM predefines (LEEF 2.0), and those the engine writes itself, each with
/// the name a carried column of that name is written under: as it is, the column would pass for
/// the attribute (a column `cat` would set the category QRadar reads, `sev` the severity, a
/// second `dsmId` the record id).
const PREDEFINED_LEEF: &[(&str, &str)] = &[
    ("cat", "col_cat"),
    ("devTime", "col_devTime"),
    ("devTimeFormat", "col_devTimeFormat"),
    ("proto", "col_proto"),
    ("sev", "col_sev"),
    ("src", "col_src"),
    ("dst", "col_dst"),
    ("srcPort", "col_srcPort"),
    ("dstPort", "col_dstPort"),
    ("srcPreNAT", "col_srcPreNAT"),
    ("dstPreNAT", "col_dstPreNAT"),
    ("srcPostNAT", "col_srcPostNAT"),
    ("dstPostNAT", "col_dstPostNAT"),
    ("usrName", "col_usrName"),
    ("srcMAC", "col_srcMAC"),
    ("dstMAC", "col_dstMAC"),
    ("srcPreNATPort", "col_srcPreNATPort"),
    ("dstPreNATPort", "col_dstPreNATPort"),
    ("srcPostNATPort", "col_srcPostNATPort"),
    ("dstPostNATPort", "col_dstPostNATPort"),
    ("identSrc", "col_identSrc"),
    ("identHostName", "col_identHostName"),
    ("identNetBios", "col_identNetBios"),
    ("identGrpName", "col_identGrpName"),
    ("identMAC", "col_identMAC"),
    ("vSrc", "col_vSrc"),
    ("vSrcName", "col_vSrcName"),
    ("accountName", "col_accountName"),
    ("srcBytes", "col_srcBytes"),
    ("dstBytes", "col_dstBytes"),
    ("srcPackets", "col_srcPackets"),
    ("dstPackets", "col_dstPackets"),
    ("totalPackets", "col_totalPackets"),
    ("role", "col_role"),
    ("realm", "col_realm"),
    ("policy", "col_policy"),
    ("resource", "col_resource"),
    ("url", "col_url"),
    ("groupID", "col_groupID"),
    ("domain", "col_domain"),
    ("isLoginEvent", "col_isLoginEvent"),
    ("isLogoutEvent", "col_isLogoutEvent"),
    ("identSecondlp", "col_identSecondlp"),
    ("calLanguage", "col_calLanguage"),
    ("AttributeLimits", "col_AttributeLimits"),
    ("calCountryOrRegion", "col_calCountryOrRegion"),
    ("dsmId", "col_dsmId"),
    ("EventName", "col_EventName"),
    ("truncated", "col_truncated"),
];

/// The LEEF key a carried column is written under, if any. A plain name (ASCII letters,
/// digits, `_`; not empty) stays as it is, unless it is a predefined attribute
/// ([`PREDEFINED_LEEF`]; LEEF keys are case-sensitive, so `AccountName` is not `accountName`),
/// which becomes `col_<name>`. A name already in
/// the event (a rule wrote that column already) or not plain is not written (the column is in
/// the ECS document all the same).
fn carried_leef_key<'k>(name: &'k str, leef: &[(&str, Val)]) -> Option<&'k str> {
    if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
        return None;
    }
    // Defender's columns are PascalCase: the predefined names start in lower case but for two,
    // so most columns are not looked up at all.
    let may_be_predefined =
        name.as_bytes()[0].is_ascii_lowercase() || name == "EventName" || name == "AttributeLimits";
    let key = PREDEFINED_LEEF
        .iter()
        .filter(|_| may_be_predefined)
        .find(|(p, _)| *p == name)
        .map_or(name, |(_, renamed)| *renamed);
    (!leef.iter().any(|(k, _)| *k == key)).then_some(key)
}

/// A deterministic 128-bit id of a record: XXH3-128 of the `<record-id>` components (each
/// value's text, then a 0xFF byte no UTF-8 text holds), or of the whole record's JSON. The same
/// record always gets the same id, on any machine and in any version of this program that keeps
/// the family's components, so a re-delivered event is recognised downstream (it is the `_id` of
/// an Elasticsearch `create`, and the LEEF key `dsmId`).
pub fn record_id<'a>(
    components: &[Vec<Source>],
    rec: &'a Json<'a>,
    args: &[Option<&'a Json<'a>>],
    cache: &mut Scratch,
) -> u128 {
    if components.is_empty() {
        return xxhash_rust::xxh3::xxh3_128(rec.to_string().as_bytes());
    }
    // One-shot hashing of the joined components: XXH3's streaming state costs more to set up
    // than these few dozen bytes cost to hash.
    let mut buf = cache.take_id_buffer();
    for alternatives in components {
        let value = alternatives.iter().find_map(|s| match s {
            Source::Path(p) => p.resolve(rec, cache),
            Source::Member(i, rest) => match args.get(*i).copied().flatten() {
                Some(v) if rest.is_empty() => Val::from_json(v),
                Some(v) => rest.resolve(v, cache),
                None => None,
            },
            _ => None,
        });
        match value {
            Some(Val::Str(s)) => buf.extend_from_slice(s.as_bytes()),
            Some(other) => buf.extend_from_slice(other.to_text().as_bytes()),
            None => {}
        }
        buf.push(0xff);
    }
    let id = xxhash_rust::xxh3::xxh3_128(&buf);
    cache.return_id_buffer(buf);
    id
}

fn convert_column<'a>(
    mut v: Val<'a>,
    steps: &[Step],
    column: &str,
    errors: &mut Vec<String>,
) -> Option<Val<'a>> {
    for step in steps {
        v = match step.apply(v) {
            Ok(Some(next)) => next,
            Ok(None) => return None,
            Err(e) => {
                column_failed(column, e, errors);
                return None;
            }
        };
    }
    Some(v)
}

#[cold]
#[inline(never)]
fn column_failed(column: &str, e: String, errors: &mut Vec<String>) {
    errors.push(format!("column {column}: {e}"));
}

/// Timestamps of a record whatever its shape, for the generic event.
pub fn any_time(rec: &Json) -> Option<Timestamp> {
    const CANDIDATES: &[&[&str]] = &[
        &["properties", "Timestamp"],
        &["time"],
        &["lastUpdateDateTime"],
        &["createdDateTime"],
        &["AlertTime"],
        &["alertCreationTime"],
    ];
    CANDIDATES.iter().find_map(|path| {
        let mut cur = rec;
        for k in *path {
            cur = cur.get(k)?;
        }
        cur.as_str().and_then(Timestamp::parse)
    })
}
