//! `<event-map>`: the QRadar classification of events, (EventID, category) -> QID record, and the
//! ECS `event.category`/`event.type` that go with it.

use super::compile::{Ctx, FieldSets};
use super::family::{EventDef, EventMap};
use super::xml::Element;
use crate::json::Text;

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
pub(super) fn compile_event_map(ctx: &mut Ctx, el: &Element, sets: &FieldSets) -> Option<EventMap> {
    ctx.allow(el, &[]);
    let mut map = EventMap {
        by_id: Default::default(),
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
        allowed.push("id");
        if !is_default {
            allowed.push("category");
        }
        ctx.allow(e, &allowed);
        let Some(def) = event_def(ctx, e, is_default) else {
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
            by_id: Default::default(),
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

/// The LEEF EventID of events that fall to a `<default>` without its own `id`.
pub const DEFAULT_EVENT_ID: &str = "Other";

fn event_def(ctx: &mut Ctx, e: &Element, is_default: bool) -> Option<EventDef> {
    let id = match e.get("id") {
        Some(id) => id.to_string(),
        None if is_default => DEFAULT_EVENT_ID.to_string(),
        None => String::new(),
    };
    if id.chars().count() > 255 {
        ctx.err(
            e,
            e.pos,
            "an EventID is at most 255 characters (QRadar's limit)",
        );
    }
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
    let mut words = |attr: &str, allowed: &[&str]| -> Vec<Text<'static>> {
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
            .map(|w| Text::checked(w.to_string()))
            .collect()
    };
    let ecs_category = words("ecs-category", ECS_CATEGORIES);
    let ecs_type = words("ecs-type", ECS_TYPES);
    Some(EventDef {
        id,
        category: e.get("category").map(String::from),
        qid_name,
        description: e.get("description").map(String::from),
        severity,
        low_level_category,
        ecs_category,
        ecs_type,
    })
}
