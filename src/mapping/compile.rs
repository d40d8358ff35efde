//! Mapping files -> compiled families. Every problem is collected with its file:line:column and
//! element, so an author sees all of them at once. Field rules are compiled in `fields.rs`, event
//! maps in `event_map.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use regex::Regex;

use super::event_map::compile_event_map;
use super::family::{Family, MemberIndex, Selector, Source};
use super::fields::Builder;
use super::ops::Op;
use super::path::Path;
use super::predicate::Predicate;
use super::steps::LookupTable;
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

/// LEEF keys the engine writes itself.
pub(super) const RESERVED_LEEF: &[&str] = &["cat", "devTime", "devTimeFormat"];
pub const ECS_VERSION: &str = "8.11.0";

/// A parsed file: its name and root element.
pub struct SourceFile {
    pub name: String,
    pub root: Element,
}

pub(super) struct Ctx<'f> {
    pub(super) file: &'f str,
    pub(super) diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    pub(super) fn err(&mut self, el: &Element, pos: Pos, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: self.file.to_string(),
            pos,
            element: el.name.clone(),
            message: message.into(),
        });
    }

    pub(super) fn allow(&mut self, el: &Element, allowed: &[&str]) {
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

    pub(super) fn required<'e>(&mut self, el: &'e Element, name: &str) -> Option<&'e str> {
        let v = el.get(name);
        if v.is_none() {
            self.err(el, el.pos, format!("missing attribute `{name}`"));
        }
        v
    }

    pub(super) fn path(&mut self, el: &Element, attr: &str) -> Option<Path> {
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

/// The `<field-set>` (`root` = "field-set") or `<column-set>` files, by id.
pub fn named_sets<'a>(files: &'a [SourceFile], root: &str) -> (FieldSets<'a>, Vec<Diagnostic>) {
    let mut sets = FieldSets::new();
    let mut diags = Vec::new();
    for f in files.iter().filter(|f| f.root.name == root) {
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
                    format!("<{root} id=\"{id}\"> is also defined in {other}"),
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
        conditions: 0,
    };
    // Lookup tables first, from the family and from the sets it includes, so any field may use them.
    collect_tables(&mut ctx, root, sets, &mut b.tables, &mut HashSet::new());

    let mut selector = None;
    let mut event_name = None;
    let mut event_category = None;
    let mut record_id: Vec<Vec<Source>> = Vec::new();
    let mut device_time = None;
    let mut event_map = None;
    let mut carries = Vec::new();
    let mut geo_paths: Vec<(String, crate::mapping::xml::Pos)> = Vec::new();
    for el in &root.children {
        match el.name.as_str() {
            "select" => {
                if selector.is_some() {
                    ctx.err(el, el.pos, "only one <select> per family");
                }
                selector = compile_select(&mut ctx, el);
            }
            "event-name" => event_name = b.header_rule(&mut ctx, el),
            "event-category" => {
                ctx.allow(el, &["value"]);
                match el.get("value").filter(|v| !v.is_empty()) {
                    Some(v) => event_category = Some(v.to_string()),
                    None => ctx.err(
                        el,
                        el.pos,
                        "<event-category> takes a fixed value=\"...\": QRadar's QID map lists (EventID, category) pairs, so a family's category cannot vary",
                    ),
                }
            }
            "device-time" => device_time = b.header_rule(&mut ctx, el),
            "field" | "group" | "include" => {
                b.body_element(&mut ctx, el, sets, None, &mut Vec::new())
            }
            "lookup-table" => {}
            "event-map" => event_map = compile_event_map(&mut ctx, el, sets),
            "record-id" => {
                ctx.allow(el, &["paths"]);
                if !record_id.is_empty() {
                    ctx.err(el, el.pos, "only one <record-id> per family");
                }
                if let Some(paths) = ctx.required(el, "paths") {
                    // Components separated by spaces; `a|b` takes the first that has a value.
                    for component in paths.split_whitespace() {
                        let mut alternatives = Vec::new();
                        for p in component.split('|') {
                            match Path::parse(p) {
                                Ok(path) => alternatives.push(Source::Path(path)),
                                Err(e) => ctx.err(el, el.pos, format!("bad path `{p}`: {e}")),
                            }
                        }
                        record_id.push(alternatives);
                    }
                }
            }
            "carry" => {
                if let Some(c) = b.carry(&mut ctx, el, columns) {
                    carries.push(c);
                }
            }
            "geo" => {
                ctx.allow(el, &["ip"]);
                if let Some(paths) = ctx.required(el, "ip") {
                    geo_paths.extend(paths.split_whitespace().map(|p| (p.to_string(), el.pos)));
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
        let mut header = [event_name.as_mut(), device_time.as_mut()];
        let rules = b
            .rules
            .iter_mut()
            .chain(header.iter_mut().filter_map(|r| r.as_deref_mut()));
        for rule in rules {
            let core = rule
                .targets
                .iter()
                .any(|t| c.prefix.as_deref().is_none_or(|p| !t.starts_with(p)));
            for source in &mut rule.sources {
                if let Some((key, whole)) = bind_member(source, &c.carry.path, &mut members) {
                    if let Some(m) = members.keys.get_mut(&key) {
                        m.core |= core && whole;
                    }
                }
            }
        }
    }
    if let Some(c) = &carry {
        // Record-id components that are members of the carried object are read from the
        // member index too, not looked up by name in every record.
        for source in record_id.iter_mut().flatten() {
            bind_member(source, &c.carry.path, &mut members);
        }
    }
    let carry = carry.map(|c| c.carry);
    let ops = Op::compile(&b.rules).unwrap_or_else(|e| {
        ctx.err(root, root.pos, e);
        Default::default()
    });
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
    let mut geo = Vec::new();
    for (path, pos) in geo_paths {
        match crate::mapping::geo::GeoSlots::new(&mut b.plan, &path) {
            Ok(g) => geo.push(g),
            Err(e) => ctx.err(root, pos, format!("<geo ip=\"{path}\">: {e}")),
        }
    }
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
        ops: ops.ops,
        op_slots: ops.slots,
        op_steps: ops.steps,
        leef_names: ops.leef_names,
        event_map,
        carry,
        members,
        record_id,
        leef_keys: b.leef_index.len(),
        plan: b.plan,
        timestamp_slot,
        ecs_version_slot,
        category_slot,
        type_slot,
        original_slot,
        error_slot,
        geo,
    })
}

/// Turns a path into the carried object into a member-index argument (read once per record in
/// the carry loop instead of looked up by name). Returns the member's name and whether the
/// source is the member whole.
fn bind_member(
    source: &mut Source,
    carry: &Path,
    members: &mut MemberIndex,
) -> Option<(String, bool)> {
    let Source::Path(p) = source else {
        return None;
    };
    let (key, rest) = p.strip_member(carry)?;
    let key = key.to_string();
    let next = members.args;
    let m = members.keys.entry(key.clone()).or_default();
    let arg = *m.arg.get_or_insert(next);
    if arg == next {
        members.args += 1;
    }
    let whole = rest.is_empty();
    *source = Source::Member(arg, rest);
    Some((key, whole))
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
    ctx.allow(el, &["id", "case-insensitive", "default", "keep-unmatched"]);
    let id = ctx.required(el, "id")?.to_string();
    let case_insensitive = bool_attr(ctx, el, "case-insensitive");
    let mut entries = super::family::FxMap::default();
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
        keep_unmatched: bool_attr(ctx, el, "keep-unmatched"),
    })
}

pub(super) fn bool_attr(ctx: &mut Ctx, el: &Element, name: &str) -> bool {
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

pub(super) fn compile_predicate(ctx: &mut Ctx, el: &Element) -> Option<Predicate> {
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

/// regex errors span several lines with a caret; a diagnostic is one line.
pub(super) fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "^")
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn compile_when(ctx: &mut Ctx, el: &Element) -> Option<Predicate> {
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
