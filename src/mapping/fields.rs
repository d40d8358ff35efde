//! `<field>`, `<group>`, `<include>` and `<carry>`: compiling a family's field rules.

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;

use super::compile::{bool_attr, compile_when, one_line, Ctx, FieldSets, RESERVED_LEEF};
use super::family::{Carry, Piece, Rule, Source};
use super::path::Path;
use super::predicate::Predicate;
use super::steps::{fuse, LookupTable, Step};
use super::xml::{Element, Pos};
use crate::format::ecs::EcsPlan;
use crate::json::Text;

pub(super) struct Builder {
    pub(super) plan: EcsPlan,
    pub(super) tables: HashMap<String, Arc<LookupTable>>,
    pub(super) rules: Vec<Rule>,
    /// LEEF key -> whether the rule that writes it is conditional.
    pub(super) leef_seen: HashMap<String, (bool, Pos)>,
    pub(super) leef_index: HashMap<String, usize>,
    /// How many condition ids were handed out.
    pub(super) conditions: usize,
}

const FIELD_ATTRS: &[&str] = &[
    "path", "value", "template", "duration", "regex", "capture", "convert", "default", "leef",
    "ecs", "append", "required",
];

impl Builder {
    /// The element's `convert` list, resolved against the family's lookup tables.
    fn steps(&self, ctx: &mut Ctx, el: &Element) -> Vec<Step> {
        let mut steps = Vec::new();
        if let Some(a) = el.attr("convert") {
            for word in a.value.split_whitespace() {
                match Step::parse(word, |id| self.tables.get(id).cloned()) {
                    Ok(s) => steps.push(s),
                    Err(e) => ctx.err(el, a.pos, e),
                }
            }
        }
        fuse(steps)
    }

    pub(super) fn header_rule(&mut self, ctx: &mut Ctx, el: &Element) -> Option<Rule> {
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

    pub(super) fn body_element(
        &mut self,
        ctx: &mut Ctx,
        el: &Element,
        sets: &FieldSets,
        when: Option<&(Predicate, usize)>,
        stack: &mut Vec<String>,
    ) {
        match el.name.as_str() {
            "field" => {
                ctx.allow(el, FIELD_ATTRS);
                let own = el.children.iter().find(|c| c.name == "when");
                let cond = match (when, own.map(|w| compile_when(ctx, w))) {
                    (Some((outer, _)), Some(Some(inner))) => {
                        Some(self.condition(Predicate::All(vec![outer.clone(), inner])))
                    }
                    (Some(outer), _) => Some(outer.clone()),
                    (None, Some(Some(inner))) => Some(self.condition(inner)),
                    (None, _) => None,
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
                    (Some((outer, _)), Some(inner)) => {
                        Some(self.condition(Predicate::All(vec![outer.clone(), inner])))
                    }
                    (Some(outer), None) => Some(outer.clone()),
                    (None, Some(inner)) => Some(self.condition(inner)),
                    (None, None) => None,
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

    /// A condition with its own id, for the per-record cache of condition results.
    fn condition(&mut self, p: Predicate) -> (Predicate, usize) {
        self.conditions += 1;
        (p, self.conditions - 1)
    }

    fn rule(
        &mut self,
        ctx: &mut Ctx,
        el: &Element,
        when: Option<(Predicate, usize)>,
    ) -> Option<Rule> {
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
            sources.push(Source::Const(Text::checked(v.to_string())));
        }
        if let Some(a) = el.attr("template") {
            match template(&a.value) {
                Ok(pieces) => sources.push(Source::Template(pieces)),
                Err(e) => ctx.err(el, a.pos, e),
            }
        }
        if let Some(a) = el.attr("duration") {
            let paths: Vec<_> = a.value.split_whitespace().map(Path::parse).collect();
            match paths.as_slice() {
                [Ok(from), Ok(to)] => sources.push(Source::Duration(from.clone(), to.clone())),
                _ => ctx.err(
                    el,
                    a.pos,
                    "`duration` takes two paths, start and end: duration=\"firstEventTime lastEventTime\"",
                ),
            }
        }
        let given = ["path", "value", "template", "duration"]
            .iter()
            .filter(|k| el.attr(k).is_some())
            .count();
        if given > 1 && !(given == 2 && el.attr("value").is_some() && el.attr("path").is_some()) {
            ctx.err(
                el,
                el.pos,
                "`path`, `value`, `template` and `duration` exclude each other",
            );
        }
        if sources.is_empty() && given == 0 {
            ctx.err(
                el,
                el.pos,
                "needs `path`, `value`, `template` or `duration`",
            );
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
        let steps = self.steps(ctx, el);
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
            targets: Vec::new(),
            what: el
                .get("path")
                .or(el.get("value"))
                .or(el.get("template"))
                .or(el.get("duration"))
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
                    rule.targets.push(path.to_string());
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
}

/// `"Found in {a.b} {c}"` -> text and path pieces; `{{` and `}}` are literal braces.
fn template(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        lit.push_str(&rest[..i]);
        let (c, after) = (rest.as_bytes()[i], &rest[i + 1..]);
        if after.as_bytes().first() == Some(&c) {
            lit.push(c as char);
            rest = &after[1..];
            continue;
        }
        if c == b'}' {
            return Err("`}` without `{` in template (write `}}` for a brace)".into());
        }
        let end = after
            .find('}')
            .ok_or("`{` without `}` in template (write `{{` for a brace)")?;
        let path = Path::parse(after[..end].trim())
            .map_err(|e| format!("bad path `{}` in template: {e}", &after[..end]))?;
        if !lit.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut lit)));
        }
        pieces.push(Piece::Hole(path));
        rest = &after[end + 1..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        pieces.push(Piece::Text(lit));
    }
    if !pieces.iter().any(|p| matches!(p, Piece::Hole(_))) {
        return Err(
            "a template needs at least one `{path}` (use `value` for constant text)".into(),
        );
    }
    Ok(pieces)
}

impl Builder {
    pub(super) fn carry(
        &mut self,
        ctx: &mut Ctx,
        el: &Element,
        column_sets: &FieldSets,
    ) -> Option<CompiledCarry> {
        ctx.allow(el, &["path", "ecs", "columns", "leef", "keep-names"]);
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
        // Several sets may be named; for a column in more than one, the first set wins, so a
        // family can override a few places of the shared dictionary.
        if let Some(ids) = el.get("columns") {
            let Some(prefix) = prefix else {
                ctx.err(
                    el,
                    el.pos,
                    "`columns` names where columns go under `ecs`, so it needs `ecs`",
                );
                return None;
            };
            for id in ids.split_whitespace() {
                let Some((set_file, set)) = column_sets.get(id) else {
                    ctx.err(
                        el,
                        el.pos,
                        format!("no <column-set id=\"{id}\"> in the mapping directory"),
                    );
                    continue;
                };
                let mut inner = Ctx {
                    file: set_file,
                    diags: Vec::new(),
                };
                let earlier = names.len();
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
                    let steps = self.steps(&mut inner, c);
                    if names[earlier..].iter().any(|(n, _)| n == name) {
                        inner.err(c, c.pos, format!("column `{name}` is listed twice"));
                        continue;
                    }
                    if names[..earlier].iter().any(|(n, _)| n == name) {
                        continue;
                    }
                    match self.plan.slot(&format!("{prefix}.{target}")) {
                        Ok(slot) => {
                            names.push((name.to_string(), columns.len()));
                            columns.push((slot, steps));
                        }
                        Err(e) => inner.err(c, c.pos, e),
                    }
                }
                ctx.diags.extend(inner.diags);
            }
        }
        let leef = bool_attr(ctx, el, "leef");
        let keep_names = bool_attr(ctx, el, "keep-names");
        Some(CompiledCarry {
            prefix: prefix.map(|p| format!("{p}.")),
            carry: Carry {
                path,
                dynamic,
                columns,
                leef,
                keep_names,
            },
            names,
        })
    }
}

/// A `<carry>` and the names of its dictionary columns (which go into the member index).
pub(super) struct CompiledCarry {
    pub(super) carry: Carry,
    /// `ecs` with a trailing dot: targets below it are vendor fields.
    pub(super) prefix: Option<String>,
    pub(super) names: Vec<(String, usize)>,
}
