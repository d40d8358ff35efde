//! Elasticsearch/OpenSearch index templates and lifecycle policies for our data streams, from
//! the mapping files: the type of each ECS field comes from the conversion that produces it
//! (`ip` -> ip, `timestamp` -> date, `int` and counts -> long, `float` -> double, `bool` ->
//! boolean, string steps -> keyword), so a new mapping field gets its type without hand work.
//! Fields whose type no conversion fixes (values copied as they come) are typed as the golden
//! fixtures' expected documents show them ([`observe`]); what neither says maps dynamically.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::event::{dataset, SourceKind};
use crate::mapping::steps::Step;
use crate::mapping::MappingSet;

/// The name every template and policy starts with.
pub const PREFIX: &str = "defender-dsm";

/// One data stream's template, and the fields two families typed differently.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    pub dataset: &'static str,
    pub body: Value,
    pub conflicts: Vec<String>,
}

/// The ECS type a rule's conversions give its value, if they fix one.
fn type_of(steps: &[Step]) -> Option<&'static str> {
    steps.iter().rev().find_map(|s| match s {
        Step::Int | Step::Count | Step::ArgCount => Some("long"),
        Step::Float => Some("double"),
        Step::Bool => Some("boolean"),
        Step::Timestamp => Some("date"),
        Step::Ip => Some("ip"),
        Step::String
        | Step::Lowercase
        | Step::Uppercase
        | Step::Trim
        | Step::Basename
        | Step::Dirname
        | Step::Mac
        | Step::Replace(..)
        | Step::Join(_) => Some("keyword"),
        // Objects, lists of mixed items, or a type the steps before them fixed.
        _ => None,
    })
}

/// Which type wins when families disagree: the one that accepts the other's values.
fn wider(a: &'static str, b: &'static str) -> &'static str {
    match (a, b) {
        (x, y) if x == y => x,
        ("long", "double") | ("double", "long") => "double",
        _ => "keyword",
    }
}

/// Types seen in documents the mappings produced (the golden fixtures' expected ECS), by path:
/// what fixes the type of fields that are copied without a conversion.
pub type Observed = BTreeMap<String, &'static str>;

/// Adds the leaf types of one ECS document to `seen` (strings keyword, integers long, decimals
/// double, booleans boolean; arrays by their items; values of differing types widen).
pub fn observe(doc: &Value, seen: &mut Observed) {
    fn walk(v: &Value, path: &mut String, seen: &mut Observed) {
        let t = match v {
            Value::Object(o) => {
                for (k, child) in o {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    walk(child, path, seen);
                    path.truncate(len);
                }
                return;
            }
            Value::Array(items) => {
                for i in items {
                    walk(i, path, seen);
                }
                return;
            }
            Value::String(_) => "keyword",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_f64() => "double",
            Value::Number(_) => "long",
            Value::Null => return,
        };
        let entry = seen.entry(path.clone()).or_insert(t);
        *entry = wider(entry, t);
    }
    walk(doc, &mut String::new(), seen);
}

/// The typed ECS fields of the families whose records go to `ds`: from the conversions, then
/// from what the fixtures show for the families' other targets.
fn fields(
    set: &MappingSet,
    ds: &str,
    observed: &Observed,
) -> (BTreeMap<String, &'static str>, Vec<String>) {
    let mut types: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut conflicts = Vec::new();
    types.insert("@timestamp".into(), "date");
    for fam in set.families() {
        let goes_here = SourceKind::ALL
            .into_iter()
            .any(|k| fam.selector.takes(k) && dataset(Some(k)) == ds);
        if !goes_here {
            continue;
        }
        for rule in &fam.rules {
            let Some(t) = type_of(&rule.steps) else {
                // Copied as it comes: typed as observed, at the path or below it.
                for target in &rule.targets {
                    let below = format!("{target}.");
                    for (path, t) in observed
                        .range(target.clone()..)
                        .take_while(|(p, _)| *p == target || p.starts_with(&below))
                    {
                        types.entry(path.clone()).or_insert(t);
                    }
                }
                continue;
            };
            for path in &rule.targets {
                match types.get(path.as_str()) {
                    Some(&old) if old != t => {
                        let w = wider(old, t);
                        conflicts.push(format!(
                            "{path}: {old} elsewhere, {t} in {} ({}); {w} kept",
                            fam.name, fam.file
                        ));
                        types.insert(path.clone(), w);
                    }
                    Some(_) => {}
                    None => {
                        types.insert(path.clone(), t);
                    }
                }
            }
        }
    }
    (types, conflicts)
}

/// Nested `properties` from dotted paths; a path that is both a value and an object's parent
/// keeps the object (the value then maps dynamically).
fn properties(types: &BTreeMap<String, &'static str>) -> Value {
    let mut root = Map::new();
    for (path, t) in types {
        let parts: Vec<&str> = path.split('.').collect();
        let mut node = &mut root;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let entry = node.entry(part.to_string()).or_insert_with(|| json!({}));
            if last {
                if entry.get("properties").is_none() {
                    *entry = json!({ "type": t });
                }
                break;
            }
            if entry.get("type").is_some() {
                *entry = json!({});
            }
            let obj = entry
                .as_object_mut()
                .map(|o| o.entry("properties").or_insert_with(|| json!({})));
            match obj.and_then(Value::as_object_mut) {
                Some(next) => node = next,
                None => break,
            }
        }
    }
    Value::Object(root)
}

/// The lifecycle policy's name for a retention.
pub fn policy_name(retention_days: u32) -> String {
    format!("{PREFIX}-delete-after-{retention_days}d")
}

/// One index template per dataset our families write. `lifecycle`: the ILM policy name
/// (Elasticsearch) written into the template's settings; OpenSearch attaches ISM policies by
/// index pattern instead.
pub fn templates(
    set: &MappingSet,
    ilm_policy: Option<&str>,
    data_streams: bool,
    observed: &Observed,
) -> Vec<Template> {
    let mut datasets: Vec<&'static str> = SourceKind::ALL
        .into_iter()
        .map(|k| dataset(Some(k)))
        .chain([dataset(None)])
        .collect();
    datasets.sort();
    datasets.dedup();
    datasets
        .into_iter()
        .map(|ds| {
            let (types, conflicts) = fields(set, ds, observed);
            let mut settings = json!({});
            if let Some(p) = ilm_policy {
                settings["index.lifecycle.name"] = Value::String(p.to_string());
            }
            let mut body = json!({
                "index_patterns": [format!("logs-{ds}-*")],
                // Above Elastic's built-in logs-*-* (100), below its integration (200), which
                // wins when installed (see docs/elastic.md).
                "priority": 150,
                "template": {
                    "settings": settings,
                    "mappings": {
                        "dynamic": true,
                        "properties": properties(&types),
                    }
                },
                "_meta": {
                    "managed_by": PREFIX,
                    "mapping_version": set.version(),
                }
            });
            if data_streams {
                body["data_stream"] = json!({});
            }
            Template {
                name: format!("{PREFIX}-logs-{ds}"),
                dataset: ds,
                body,
                conflicts,
            }
        })
        .collect()
}

/// Elasticsearch ILM: roll over daily or at 50 GB, delete `retention_days` after rollover.
pub fn ilm_policy(retention_days: u32) -> Value {
    json!({
        "policy": {
            "_meta": { "managed_by": PREFIX },
            "phases": {
                "hot": {
                    "min_age": "0ms",
                    "actions": {
                        "rollover": { "max_age": "1d", "max_primary_shard_size": "50gb" }
                    }
                },
                "delete": {
                    "min_age": format!("{retention_days}d"),
                    "actions": { "delete": {} }
                }
            }
        }
    })
}

/// OpenSearch ISM: delete backing indices `retention_days` after creation; attached to new
/// indices of our data streams by `ism_template`.
pub fn ism_policy(retention_days: u32, datasets: &[&str], data_streams: bool) -> Value {
    // Data streams' backing indices are `.ds-<stream>-<generation>`.
    let prefix = if data_streams { ".ds-" } else { "" };
    let patterns: Vec<String> = datasets
        .iter()
        .map(|ds| format!("{prefix}logs-{ds}-*"))
        .collect();
    json!({
        "policy": {
            "description": format!("{PREFIX}: delete after {retention_days} days"),
            "default_state": "hot",
            "states": [
                {
                    "name": "hot",
                    "actions": [],
                    "transitions": [
                        { "state_name": "delete", "conditions": { "min_index_age": format!("{retention_days}d") } }
                    ]
                },
                {
                    "name": "delete",
                    "actions": [ { "delete": {} } ],
                    "transitions": []
                }
            ],
            "ism_template": [ { "index_patterns": patterns, "priority": 150 } ]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> MappingSet {
        MappingSet::embedded().expect("bundled mappings")
    }

    #[test]
    fn types_come_from_the_conversions() {
        let mut seen = Observed::new();
        observe(
            &json!({"url": {"port": 443, "domain": "x"}, "event": {"duration": 5}}),
            &mut seen,
        );
        let t = templates(&set(), Some("p"), true, &seen);
        let event = t
            .iter()
            .find(|t| t.dataset == "m365_defender.event")
            .expect("event template");
        let props = &event.body["template"]["mappings"]["properties"];
        assert_eq!(props["@timestamp"]["type"], "date");
        assert_eq!(props["source"]["properties"]["ip"]["type"], "ip");
        assert_eq!(props["destination"]["properties"]["ip"]["type"], "ip");
        assert_eq!(props["process"]["properties"]["args_count"]["type"], "long");
        assert_eq!(
            event.body["index_patterns"][0],
            "logs-m365_defender.event-*"
        );
        assert_eq!(
            event.body["template"]["settings"]["index.lifecycle.name"],
            "p"
        );
        assert!(t.iter().any(|t| t.dataset == "m365_defender.alert"));
        // Copied without a conversion: typed as the fixtures show.
        assert_eq!(props["url"]["properties"]["port"]["type"], "long");
        assert_eq!(props["url"]["properties"]["domain"]["type"], "keyword");
    }

    #[test]
    fn lifecycle_policies_have_the_documented_shapes_and_the_retention() {
        let ilm = ilm_policy(7);
        assert_eq!(ilm["policy"]["phases"]["delete"]["min_age"], "7d");
        assert_eq!(
            ilm["policy"]["phases"]["delete"]["actions"]["delete"],
            json!({})
        );
        assert!(ilm["policy"]["phases"]["hot"]["actions"]["rollover"]["max_age"].is_string());
        assert!(templates(&set(), None, false, &Observed::new())[0]
            .body
            .get("data_stream")
            .is_none());
        let ism = ism_policy(30, &["m365_defender.event"], true);
        let states = ism["policy"]["states"].as_array().expect("states");
        assert_eq!(ism["policy"]["default_state"], "hot");
        assert_eq!(
            states[0]["transitions"][0]["conditions"]["min_index_age"],
            "30d"
        );
        assert_eq!(states[1]["actions"][0], json!({"delete": {}}));
        assert_eq!(
            ism["policy"]["ism_template"][0]["index_patterns"][0],
            ".ds-logs-m365_defender.event-*"
        );
        assert_eq!(policy_name(7), "defender-dsm-delete-after-7d");
    }
}
