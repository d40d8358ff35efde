//! Mapping files -> compiled families. Every problem is collected with its file:line:column and
//! element, so an author sees all of them at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use regex::Regex;

use super::family::{Carry, EventDef, EventMap, Family, MemberIndex, Rule, Selector, Source};
use super::path::Path;
use super::predicate::Predicate;
use super::value::{LookupTable, Step};
use super::xml::{Element, Pos};
use crate::event::SourceKind;
use crate::format::ecs::EcsPlan;

/// One problem in a mapping file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub file: String,
    pub pos: Pos,
    pub element: String,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: <{}>: {}",
            self.file, self.pos.line, self.pos.column, self.element, self.message
        )
    }
}

/// ECS `event.category` values (ECS 8.11), checked so that a typo fails at load time.
const ECS_CATEGORIES: &[&str] = &[
    "api",
    "authentication",
    "configuration",
    "database",
    "driver",
    "email",
    "file",
    "host",
    "iam",
    "intrusion_detection",
    "library",
    "malware",
    "network",
    "package",
    "process",
    "registry",
    "session",
    "threat",
    "vulnerability",
    "web",
];
/// ECS `event.type` values (ECS 8.11).
const ECS_TYPES: &[&str] = &[
    "access",
    "admin",
    "allowed",
    "change",
    "connection",
    "creation",
    "deletion",
    "denied",
    "end",
    "error",
    "group",
    "indicator",
    "info",
    "installation",
    "protocol",
    "start",
    "user",
];
/// LEEF keys the engine writes itself.
const RESERVED_LEEF: &[&str] = &["cat", "devTime", "devTimeFormat"];
pub const ECS_VERSION: &str = "8.11.0";

/// A parsed file: its name and root element.
pub struct SourceFile {
    pub name: String,
    pub root: Element,
}

struct Ctx<'f> {
    file: &'f str,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, el: &Element, pos: Pos, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: self.file.to_string(),
            pos,
            element: el.name.clone(),
            message: message.into(),
        });
    }

    fn allow(&mut self, el: &Element, allowed: &[&str]) {
        for a in &el.attrs {
            if !allowed.contains(&a.name.as_str()) {
                let msg = if allowed.is_empty() {
                    format!("unknown attribute `{}` (this element takes none)", a.name)
                } else {
                    format!(
                        "unknown attribute `{}` (allowed: {})",
                        a.name,
                        allowed.join(", ")
                    )
                };
                self.err(el, a.pos, msg);
            }
        }
    }

    fn required<'e>(&mut self, el: &'e Element, name: &str) -> Option<&'e str> {
        let v = el.get(name);
        if v.is_none() {
            self.err(el, el.pos, format!("missing attribute `{name}`"));
        }
        v
    }

    fn path(&mut self, el: &Element, attr: &str) -> Option<Path> {
        let a = el.attr(attr)?;
        match Path::parse(&a.value) {
            Ok(p) => Some(p),
            Err(e) => {
                self.err(el, a.pos, format!("bad path `{}`: {e}", a.value));
                None
            }
        }
    }
}

/// Field sets from `<field-set>` files, by id.
pub type FieldSets<'a> = HashMap<String, (&'a str, &'a Element)>;

pub fn field_sets(files: &[SourceFile]) -> (FieldSets<'_>, Vec<Diagnostic>) {
    let mut sets = FieldSets::new();
    let mut diags = Vec::new();
    for f in files.iter().filter(|f| f.root.name == "field-set") {
        let mut ctx = Ctx {
            file: &f.name,
            diags: Vec::new(),
        };
        ctx.allow(&f.root, &["id"]);
        if let Some(id) = ctx.required(&f.root, "id") {
            if let Some((other, _)) = sets.insert(id.to_string(), (f.name.as_str(), &f.root)) {
                ctx.err(
                    &f.root,
                    f.root.pos,
                    format!("field set `{id}` is also defined in {other}"),
                );
            }
        }
        diags.extend(ctx.diags);
    }
    (sets, diags)
}

/// Column dictionaries from `<column-set>` files, by id.
pub fn column_sets(files: &[SourceFile]) -> (FieldSets<'_>, Vec<Diagnostic>) {
    let mut sets = FieldSets::new();
    let mut diags = Vec::new();
    for f in files.iter().filter(|f| f.root.name == "column-set") {
        let mut ctx = Ctx {
            file: &f.name,
            diags: Vec::new(),
        };
        ctx.allow(&f.root, &["id"]);
        if let Some(id) = ctx.required(&f.root, "id") {
            if let Some((other, _)) = sets.insert(id.to_string(), (f.name.as_str(), &f.root)) {
                ctx.err(
                    &f.root,
                    f.root.pos,
                    format!("column set `{id}` is also defined in {other}"),
                );
            }
        }
        diags.extend(ctx.diags);
    }
    (sets, diags)
}

/// Compiles one `<dsm-mapping>` file.
pub fn compile_family(
    file: &SourceFile,
    sets: &FieldSets,
    columns: &FieldSets,
) -> Result<Family, Vec<Diagnostic>> {
    let mut ctx = Ctx {
        file: &file.name,
        diags: Vec::new(),
    };
    let root = &file.root;
    ctx.allow(root, &["family", "product", "version"]);
    let name = ctx.required(root, "family").unwrap_or("").to_string();
    let mut b = Builder {
        plan: EcsPlan::default(),
        tables: HashMap::new(),
        rules: Vec::new(),
        leef_seen: HashMap::new(),
        leef_index: HashMap::new(),
    };
    // Lookup tables first, from the family and from the sets it includes, so any field may use them.
    collect_tables(&mut ctx, root, sets, &mut b.tables, &mut HashSet::new());

    let mut selector = None;
    let mut event_name = None;
    let mut event_category = None;
    let mut device_time = None;
    let mut event_map = None;
    let mut carries = Vec::new();
    for el in &root.children {
        match el.name.as_str() {
            "select" => {
                if selector.is_some() {
                    ctx.err(el, el.pos, "only one <select> per family");
                }
                selector = compile_select(&mut ctx, el);
            }
            "event-name" => event_name = b.header_rule(&mut ctx, el),
            "event-category" => event_category = b.header_rule(&mut ctx, el),
            "device-time" => device_time = b.header_rule(&mut ctx, el),
            "field" | "group" | "include" => {
                b.body_element(&mut ctx, el, sets, None, &mut Vec::new())
            }
            "lookup-table" => {}
            "event-map" => event_map = compile_event_map(&mut ctx, el, sets),
            "carry" => {
                if let Some(c) = b.carry(&mut ctx, el, columns) {
                    carries.push(c);
                }
            }
            other => ctx.err(
                el,
                el.pos,
                format!("unknown element <{other}> in <dsm-mapping>"),
            ),
        }
    }
    for (what, missing) in [
        ("select", selector.is_none()),
        ("event-name", event_name.is_none()),
        ("event-category", event_category.is_none()),
        ("device-time", device_time.is_none()),
        ("event-map", event_map.is_none()),
    ] {
        if missing {
            ctx.err(root, root.pos, format!("a family needs a <{what}>"));
        }
    }
    if carries.len() > 1 {
        ctx.err(root, root.pos, "a family has at most one <carry>");
    }
    let carry = carries.into_iter().next();
    let mut members = MemberIndex::default();
    if let Some(c) = &carry {
        for (name, column) in &c.names {
            members.keys.entry(name.clone()).or_default().column = Some(*column);
        }
        let mut header = [
            event_name.as_mut(),
            event_category.as_mut(),
            device_time.as_mut(),
        ];
        let rules = b
            .rules
            .iter_mut()
            .chain(header.iter_mut().filter_map(|r| r.as_deref_mut()));
        for rule in rules {
            for source in &mut rule.sources {
                let Source::Path(p) = source else { continue };
                let Some((key, rest)) = p.strip_member(&c.carry.path) else {
                    continue;
                };
                let next = members.args;
                let m = members.keys.entry(key.to_string()).or_default();
                let arg = *m.arg.get_or_insert(next);
                if arg == next {
                    members.args += 1;
                }
                *source = Source::Member(arg, rest);
            }
        }
    }
    let carry = carry.map(|c| c.carry);
    let mut fixed_slot = |path: &str, ctx: &mut Ctx| match b.plan.slot(path) {
        Ok(slot) => slot,
        Err(e) => {
            ctx.err(root, root.pos, e);
            0
        }
    };
    let timestamp_slot = fixed_slot("@timestamp", &mut ctx);
    let ecs_version_slot = fixed_slot("ecs.version", &mut ctx);
    let category_slot = fixed_slot("event.category", &mut ctx);
    let type_slot = fixed_slot("event.type", &mut ctx);
    let original_slot = fixed_slot("event.original", &mut ctx);
    let error_slot = fixed_slot("error.message", &mut ctx);
    b.plan.finish();
    if !ctx.diags.is_empty() {
        return Err(ctx.diags);
    }
    let (
        Some(selector),
        Some(event_name),
        Some(event_category),
        Some(device_time),
        Some(event_map),
    ) = (selector, event_name, event_category, device_time, event_map)
    else {
        return Err(ctx.diags);
    };
    Ok(Family {
        name,
        file: file.name.clone(),
        pos: root.pos,
        product: root.get("product").unwrap_or("Defender XDR").to_string(),
        version: root.get("version").unwrap_or("1.0").to_string(),
        selector,
        event_name,
        event_category,
        device_time,
        rules: b.rules,
        event_map,
        carry,
        members,
        leef_keys: b.leef_index.len(),
        plan: b.plan,
        timestamp_slot,
        ecs_version_slot,
        category_slot,
        type_slot,
        original_slot,
        error_slot,
    })
}

fn collect_tables(
    ctx: &mut Ctx,
    el: &Element,
    sets: &FieldSets,
    tables: &mut HashMap<String, Arc<LookupTable>>,
    visited: &mut HashSet<String>,
) {
    for child in &el.children {
        match child.name.as_str() {
            "lookup-table" => {
                if let Some(t) = compile_table(ctx, child) {
                    if tables.insert(t.id.clone(), Arc::new(t)).is_some() {
                        ctx.err(
                            child,
                            child.pos,
                            "a lookup table with this id is already defined",
                        );
                    }
                }
            }
            "include" => {
                if let Some((_, set)) = child.get("set").and_then(|id| sets.get(id)) {
                    if visited.insert(child.get("set").unwrap_or_default().to_string()) {
                        let mut inner = Ctx {
                            file: ctx.file,
                            diags: Vec::new(),
                        };
                        collect_tables(&mut inner, set, sets, tables, visited);
                        ctx.diags.extend(inner.diags);
                    }
                }
            }
            _ => {}
        }
    }
}

fn compile_table(ctx: &mut Ctx, el: &Element) -> Option<LookupTable> {
    ctx.allow(el, &["id", "case-insensitive", "default"]);
    let id = ctx.required(el, "id")?.to_string();
    let case_insensitive = bool_attr(ctx, el, "case-insensitive");
    let mut entries = HashMap::new();
    for e in &el.children {
        if e.name != "entry" {
            ctx.err(
                e,
                e.pos,
                "a <lookup-table> holds only <entry key=\"..\" value=\"..\"/>",
            );
            continue;
        }
        ctx.allow(e, &["key", "value"]);
        if let (Some(k), Some(v)) = (ctx.required(e, "key"), ctx.required(e, "value")) {
            let k = if case_insensitive {
                k.to_lowercase()
            } else {
                k.to_string()
            };
            if entries.insert(k, v.to_string()).is_some() {
                ctx.err(e, e.pos, "duplicate key in this table");
            }
        }
    }
    Some(LookupTable {
        id,
        entries,
        case_insensitive,
        default: el.get("default").map(String::from),
    })
}

fn bool_attr(ctx: &mut Ctx, el: &Element, name: &str) -> bool {
    match el.attr(name) {
        None => false,
        Some(a) if a.value == "true" => true,
        Some(a) if a.value == "false" => false,
        Some(a) => {
            let pos = a.pos;
            ctx.err(el, pos, format!("`{name}` is `true` or `false`"));
            false
        }
    }
}

fn compile_select(ctx: &mut Ctx, el: &Element) -> Option<Selector> {
    ctx.allow(el, &["source", "fallback"]);
    let mut sources = Vec::new();
    if let Some(a) = el.attr("source") {
        for word in a.value.split_whitespace() {
            match word.parse::<SourceKind>() {
                Ok(k) => sources.push(k),
                Err(e) => ctx.err(el, a.pos, e),
            }
        }
    }
    let fallback = bool_attr(ctx, el, "fallback");
    let preds: Vec<_> = el
        .children
        .iter()
        .filter_map(|c| compile_predicate(ctx, c))
        .collect();
    if preds.is_empty() && !fallback {
        ctx.err(
            el,
            el.pos,
            "a <select> needs at least one condition (or fallback=\"true\")",
        );
    }
    Some(Selector {
        sources,
        predicate: Predicate::All(preds),
        fallback,
    })
}

fn compile_predicate(ctx: &mut Ctx, el: &Element) -> Option<Predicate> {
    let path_only = |ctx: &mut Ctx, allowed: &[&str]| -> Option<Path> {
        ctx.allow(el, allowed);
        ctx.required(el, "path")?;
        ctx.path(el, "path")
    };
    let value = |ctx: &mut Ctx| ctx.required(el, "value").map(String::from);
    Some(match el.name.as_str() {
        "equals" => Predicate::Equals(path_only(ctx, &["path", "value"])?, value(ctx)?),
        "not-equals" => Predicate::NotEquals(path_only(ctx, &["path", "value"])?, value(ctx)?),
        "prefix" => Predicate::Prefix(path_only(ctx, &["path", "value"])?, value(ctx)?),
        "one-of" => {
            let p = path_only(ctx, &["path", "values"])?;
            let vs = ctx
                .required(el, "values")?
                .split('|')
                .map(String::from)
                .collect();
            Predicate::OneOf(p, vs)
        }
        "exists" => Predicate::Exists(path_only(ctx, &["path"])?),
        "missing" => Predicate::Missing(path_only(ctx, &["path"])?),
        "matches" => {
            let p = path_only(ctx, &["path", "regex"])?;
            let re = ctx.required(el, "regex")?;
            match Regex::new(re) {
                Ok(r) => Predicate::Matches(p, r),
                Err(e) => {
                    let pos = el.attr("regex").map_or(el.pos, |a| a.pos);
                    ctx.err(el, pos, format!("bad regex: {}", one_line(&e.to_string())));
                    return None;
                }
            }
        }
        "all" | "any" | "not" => {
            ctx.allow(el, &[]);
            let inner: Vec<_> = el
                .children
                .iter()
                .filter_map(|c| compile_predicate(ctx, c))
                .collect();
            match el.name.as_str() {
                "all" => Predicate::All(inner),
                "any" => Predicate::Any(inner),
                _ if inner.len() == 1 => Predicate::Not(Box::new(inner.into_iter().next()?)),
                _ => {
                    ctx.err(el, el.pos, "<not> holds exactly one condition");
                    return None;
                }
            }
        }
        other => {
            ctx.err(el, el.pos, format!(
                "unknown condition <{other}> (known: equals, not-equals, one-of, prefix, exists, missing, matches, all, any, not)"
            ));
            return None;
        }
    })
}

fn compile_event_map(ctx: &mut Ctx, el: &Element, sets: &FieldSets) -> Option<EventMap> {
    ctx.allow(el, &[]);
    let mut map = EventMap {
        by_id: HashMap::new(),
        default: None,
    };
    event_entries(ctx, el, sets, &mut map);
    if map.default.is_none() {
        ctx.err(el, el.pos, "an <event-map> needs a <default> (its own or an included one) so that every event gets a QID");
    }
    Some(map)
}

/// Entries of an `<event-map>`, with `<include set=".."/>` taking the entries of the event map
/// in that field set. Entries of the family come first, so they override included ones.
fn event_entries(ctx: &mut Ctx, el: &Element, sets: &FieldSets, map: &mut EventMap) {
    for e in el.children.iter().filter(|e| e.name != "include") {
        let is_default = match e.name.as_str() {
            "event" => false,
            "default" => true,
            other => {
                ctx.err(e, e.pos, format!("unknown element <{other}> in <event-map> (expected <event>, <default> or <include>)"));
                continue;
            }
        };
        let mut allowed = vec![
            "qid-name",
            "severity",
            "low-level-category",
            "ecs-category",
            "ecs-type",
            "description",
        ];
        if !is_default {
            allowed.extend(["id", "category"]);
        }
        ctx.allow(e, &allowed);
        let Some(def) = event_def(ctx, e) else {
            continue;
        };
        if is_default {
            if map.default.is_some() {
                ctx.err(e, e.pos, "only one <default> per event map");
            } else {
                map.default = Some(def);
            }
            continue;
        }
        let Some(id) = ctx.required(e, "id") else {
            continue;
        };
        let list = map.by_id.entry(id.to_string()).or_default();
        if list.iter().any(|d: &EventDef| d.category == def.category) {
            ctx.err(
                e,
                e.pos,
                format!("event `{id}` is mapped twice for the same category"),
            );
        }
        list.push(def);
    }
    for inc in el.children.iter().filter(|e| e.name == "include") {
        ctx.allow(inc, &["set"]);
        let Some(id) = ctx.required(inc, "set") else {
            continue;
        };
        let Some((set_file, set)) = sets.get(id) else {
            ctx.err(
                inc,
                inc.pos,
                format!("no <field-set id=\"{id}\"> in the mapping directory"),
            );
            continue;
        };
        let Some(inner_map) = set.children.iter().find(|c| c.name == "event-map") else {
            ctx.err(inc, inc.pos, format!("field set `{id}` has no <event-map>"));
            continue;
        };
        let mut included = EventMap {
            by_id: HashMap::new(),
            default: None,
        };
        let mut inner = Ctx {
            file: set_file,
            diags: Vec::new(),
        };
        event_entries(&mut inner, inner_map, sets, &mut included);
        ctx.diags.extend(inner.diags);
        for (id, defs) in included.by_id {
            let list = map.by_id.entry(id).or_default();
            for d in defs {
                if !list.iter().any(|x| x.category == d.category) {
                    list.push(d);
                }
            }
        }
        if map.default.is_none() {
            map.default = included.default;
        }
    }
}

fn event_def(ctx: &mut Ctx, e: &Element) -> Option<EventDef> {
    let qid_name = ctx.required(e, "qid-name")?.to_string();
    if qid_name.chars().count() > 255 {
        ctx.err(
            e,
            e.pos,
            "qid-name is at most 255 characters (QRadar's limit)",
        );
    }
    let sev_attr = e.attr("severity");
    let severity = match ctx.required(e, "severity")?.parse::<u8>() {
        Ok(s) if (1..=10).contains(&s) => s,
        _ => {
            ctx.err(
                e,
                sev_attr.map_or(e.pos, |a| a.pos),
                "severity is a whole number from 1 to 10",
            );
            return None;
        }
    };
    let llc_attr = e.attr("low-level-category");
    let low_level_category = match ctx.required(e, "low-level-category")?.parse::<u32>() {
        Ok(n) if (1000..30000).contains(&n) => n,
        _ => {
            ctx.err(
                e,
                llc_attr.map_or(e.pos, |a| a.pos),
                "low-level-category is a QRadar category id such as 8052",
            );
            return None;
        }
    };
    let mut words = |attr: &str, allowed: &[&str]| -> Vec<String> {
        let Some(a) = e.attr(attr) else {
            return Vec::new();
        };
        a.value
            .split_whitespace()
            .filter(|w| {
                let ok = allowed.contains(w);
                if !ok {
                    ctx.err(
                        e,
                        a.pos,
                        format!(
                            "`{w}` is not an ECS {attr} value (allowed: {})",
                            allowed.join(", ")
                        ),
                    );
                }
                ok
            })
            .map(String::from)
            .collect()
    };
    let ecs_category = words("ecs-category", ECS_CATEGORIES);
    let ecs_type = words("ecs-type", ECS_TYPES);
    Some(EventDef {
        category: e.get("category").map(String::from),
        qid_name,
        description: e.get("description").map(String::from),
        severity,
        low_level_category,
        ecs_category,
        ecs_type,
    })
}

struct Builder {
    plan: EcsPlan,
    tables: HashMap<String, Arc<LookupTable>>,
    rules: Vec<Rule>,
    /// LEEF key -> whether the rule that writes it is conditional.
    leef_seen: HashMap<String, (bool, Pos)>,
    leef_index: HashMap<String, usize>,
}

const FIELD_ATTRS: &[&str] = &[
    "path", "value", "regex", "capture", "convert", "default", "leef", "ecs", "append", "required",
];

impl Builder {
    fn header_rule(&mut self, ctx: &mut Ctx, el: &Element) -> Option<Rule> {
        ctx.allow(
            el,
            &["path", "value", "regex", "capture", "convert", "default"],
        );
        let mut rule = self.rule(ctx, el, None)?;
        if el.name == "device-time" && !rule.steps.iter().any(|s| matches!(s, Step::Timestamp)) {
            rule.steps.push(Step::Timestamp);
        }
        Some(rule)
    }

    fn body_element(
        &mut self,
        ctx: &mut Ctx,
        el: &Element,
        sets: &FieldSets,
        when: Option<&Predicate>,
        stack: &mut Vec<String>,
    ) {
        match el.name.as_str() {
            "field" => {
                ctx.allow(el, FIELD_ATTRS);
                let own = el.children.iter().find(|c| c.name == "when");
                let cond = match (when, own.map(|w| compile_when(ctx, w))) {
                    (Some(outer), Some(Some(inner))) => {
                        Some(Predicate::All(vec![outer.clone(), inner]))
                    }
                    (Some(outer), _) => Some(outer.clone()),
                    (None, Some(inner)) => inner,
                    (None, None) => None,
                };
                for c in el.children.iter().filter(|c| c.name != "when") {
                    ctx.err(c, c.pos, "a <field> holds only a <when>");
                }
                if let Some(rule) = self.rule(ctx, el, cond) {
                    self.rules.push(rule);
                }
            }
            "group" => {
                ctx.allow(el, &[]);
                let own = el
                    .children
                    .iter()
                    .find(|c| c.name == "when")
                    .and_then(|w| compile_when(ctx, w));
                let cond = match (when, own) {
                    (Some(outer), Some(inner)) => Some(Predicate::All(vec![outer.clone(), inner])),
                    (Some(outer), None) => Some(outer.clone()),
                    (None, inner) => inner,
                };
                for c in el.children.iter().filter(|c| c.name != "when") {
                    self.body_element(ctx, c, sets, cond.as_ref(), stack);
                }
            }
            "include" => {
                ctx.allow(el, &["set"]);
                let Some(id) = ctx.required(el, "set") else {
                    return;
                };
                let Some((set_file, set)) = sets.get(id) else {
                    ctx.err(
                        el,
                        el.pos,
                        format!("no <field-set id=\"{id}\"> in the mapping directory"),
                    );
                    return;
                };
                if stack.iter().any(|s| s == id) {
                    ctx.err(el, el.pos, format!("field set `{id}` includes itself"));
                    return;
                }
                stack.push(id.to_string());
                let mut inner = Ctx {
                    file: set_file,
                    diags: Vec::new(),
                };
                for c in &set.children {
                    if c.name != "lookup-table" {
                        self.body_element(&mut inner, c, sets, when, stack);
                    }
                }
                ctx.diags.extend(inner.diags);
                stack.pop();
            }
            "when" | "lookup-table" | "event-map" => {}
            other => ctx.err(
                el,
                el.pos,
                format!("unknown element <{other}> (expected <field>, <group> or <include>)"),
            ),
        }
    }

    fn rule(&mut self, ctx: &mut Ctx, el: &Element, when: Option<Predicate>) -> Option<Rule> {
        let mut sources = Vec::new();
        if let Some(a) = el.attr("path") {
            for alt in a.value.split('|') {
                match Path::parse(alt.trim()) {
                    Ok(p) => sources.push(Source::Path(p)),
                    Err(e) => ctx.err(el, a.pos, format!("bad path `{}`: {e}", alt.trim())),
                }
            }
        }
        if let Some(v) = el.get("value") {
            if el.attr("path").is_some() {
                ctx.err(
                    el,
                    el.pos,
                    "`path` and `value` exclude each other (use `default` for a fallback)",
                );
            }
            sources.push(Source::Const(v.to_string()));
        }
        if sources.is_empty() && el.attr("path").is_none() {
            ctx.err(el, el.pos, "needs `path` or `value`");
            return None;
        }
        let regex = match el.attr("regex") {
            None => None,
            Some(a) => match Regex::new(&a.value) {
                Err(e) => {
                    ctx.err(
                        el,
                        a.pos,
                        format!("bad regex: {}", one_line(&e.to_string())),
                    );
                    None
                }
                Ok(re) => {
                    let group = match el.get("capture") {
                        None => Some(usize::from(re.captures_len() > 1)),
                        Some(name) => match name.parse::<usize>() {
                            Ok(n) if n < re.captures_len() => Some(n),
                            Ok(_) => None,
                            Err(_) => re.capture_names().position(|c| c == Some(name)),
                        },
                    };
                    match group {
                        Some(g) => Some((re, g)),
                        None => {
                            let pos = el.attr("capture").map_or(a.pos, |c| c.pos);
                            ctx.err(el, pos, "`capture` names no group of the regex");
                            None
                        }
                    }
                }
            },
        };
        if el.attr("capture").is_some() && el.attr("regex").is_none() {
            ctx.err(el, el.pos, "`capture` goes with `regex`");
        }
        let mut steps = Vec::new();
        if let Some(a) = el.attr("convert") {
            for word in a.value.split_whitespace() {
                match Step::parse(word, |id| self.tables.get(id).cloned()) {
                    Ok(s) => steps.push(s),
                    Err(e) => ctx.err(el, a.pos, e),
                }
            }
        }
        let required = bool_attr(ctx, el, "required");
        let mut rule = Rule {
            sources,
            regex,
            steps,
            default: el.get("default").map(String::from),
            when,
            required,
            leef: None,
            ecs: Vec::new(),
            append: Vec::new(),
            what: el
                .get("path")
                .or(el.get("value"))
                .unwrap_or_default()
                .to_string(),
            file: ctx.file.to_string(),
            pos: el.pos,
        };
        if let Some(a) = el.attr("leef") {
            let key = a.value.as_str();
            if key.is_empty() || !key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                ctx.err(
                    el,
                    a.pos,
                    format!("LEEF key `{key}` may hold only A-Z, a-z, 0-9 and _"),
                );
            } else if RESERVED_LEEF.contains(&key) {
                ctx.err(el, a.pos, format!("LEEF key `{key}` is written by the engine (from <event-category>/<device-time>)"));
            } else {
                let conditional = rule.when.is_some();
                if let Some((prev_cond, prev_pos)) = self.leef_seen.get(key) {
                    if !conditional && !prev_cond {
                        ctx.err(el, a.pos, format!(
                            "LEEF key `{key}` is already written at line {}; give alternatives as path=\"a|b\" or put them under <when>",
                            prev_pos.line
                        ));
                    }
                }
                self.leef_seen
                    .insert(key.to_string(), (conditional, el.pos));
                let next = self.leef_index.len();
                let index = *self.leef_index.entry(key.to_string()).or_insert(next);
                rule.leef = Some((key.to_string(), index));
            }
        }
        for (attr, into_append) in [("ecs", false), ("append", true)] {
            if let Some(a) = el.attr(attr) {
                for path in a.value.split_whitespace() {
                    match self.plan.slot(path) {
                        Ok(slot) if into_append => rule.append.push(slot),
                        Ok(slot) => rule.ecs.push(slot),
                        Err(e) => ctx.err(el, a.pos, e),
                    }
                }
            }
        }
        Some(rule)
    }

    fn carry(
        &mut self,
        ctx: &mut Ctx,
        el: &Element,
        column_sets: &FieldSets,
    ) -> Option<CompiledCarry> {
        ctx.allow(el, &["path", "ecs", "columns", "leef"]);
        ctx.required(el, "path")?;
        let path = ctx.path(el, "path")?;
        let prefix = el.get("ecs");
        let dynamic = prefix.and_then(|p| match self.plan.dynamic(p) {
            Ok(d) => Some(d),
            Err(e) => {
                ctx.err(el, el.pos, e);
                None
            }
        });
        let mut columns = Vec::new();
        let mut names: Vec<(String, usize)> = Vec::new();
        if let Some(id) = el.get("columns") {
            let Some(prefix) = prefix else {
                ctx.err(
                    el,
                    el.pos,
                    "`columns` names where columns go under `ecs`, so it needs `ecs`",
                );
                return None;
            };
            let Some((set_file, set)) = column_sets.get(id) else {
                ctx.err(
                    el,
                    el.pos,
                    format!("no <column-set id=\"{id}\"> in the mapping directory"),
                );
                return None;
            };
            let mut inner = Ctx {
                file: set_file,
                diags: Vec::new(),
            };
            for c in &set.children {
                if c.name != "column" {
                    inner.err(
                        c,
                        c.pos,
                        "a <column-set> holds only <column name=\"..\" ecs=\"..\"/>",
                    );
                    continue;
                }
                inner.allow(c, &["name", "ecs", "convert"]);
                let (Some(name), Some(target)) =
                    (inner.required(c, "name"), inner.required(c, "ecs"))
                else {
                    continue;
                };
                let mut steps = Vec::new();
                if let Some(a) = c.attr("convert") {
                    for word in a.value.split_whitespace() {
                        match Step::parse(word, |id| self.tables.get(id).cloned()) {
                            Ok(st) => steps.push(st),
                            Err(e) => inner.err(c, a.pos, e),
                        }
                    }
                }
                match self.plan.slot(&format!("{prefix}.{target}")) {
                    Ok(slot) => {
                        if names.iter().any(|(n, _)| n == name) {
                            inner.err(c, c.pos, format!("column `{name}` is listed twice"));
                        } else {
                            names.push((name.to_string(), columns.len()));
                            columns.push((slot, steps));
                        }
                    }
                    Err(e) => inner.err(c, c.pos, e),
                }
            }
            ctx.diags.extend(inner.diags);
        }
        let leef = bool_attr(ctx, el, "leef");
        Some(CompiledCarry {
            carry: Carry {
                path,
                dynamic,
                columns,
                leef,
            },
            names,
        })
    }
}

/// A `<carry>` and the names of its dictionary columns (which go into the member index).
struct CompiledCarry {
    carry: Carry,
    names: Vec<(String, usize)>,
}

/// regex errors span several lines with a caret; a diagnostic is one line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "^")
        .collect::<Vec<_>>()
        .join(" ")
}

fn compile_when(ctx: &mut Ctx, el: &Element) -> Option<Predicate> {
    ctx.allow(el, &[]);
    let preds: Vec<_> = el
        .children
        .iter()
        .filter_map(|c| compile_predicate(ctx, c))
        .collect();
    if preds.is_empty() {
        ctx.err(el, el.pos, "a <when> needs at least one condition");
        return None;
    }
    Some(Predicate::All(preds))
}
