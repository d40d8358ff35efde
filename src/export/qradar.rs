//! QRadar content from the mapping files: the QID records and DSM event mappings every
//! (EventID, category) pair the engine can emit needs, and custom event properties for the
//! custom LEEF keys, as import files for `qidmap_cli.sh` and QRadar's REST API.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::mapping::family::{EventDef, RECORD_ID_KEY};
use crate::mapping::{generic_event_id, MappingSet, Outcome, GENERIC_CATEGORY};

/// LEEF keys QRadar normalises itself; every other key needs a custom event property.
pub const NORMALISED_KEYS: &[&str] = &[
    "cat",
    "devTime",
    "devTimeFormat",
    "proto",
    "sev",
    "src",
    "dst",
    "srcPort",
    "dstPort",
    "srcPreNAT",
    "dstPreNAT",
    "srcPostNAT",
    "dstPostNAT",
    "srcPreNATPort",
    "dstPreNATPort",
    "srcPostNATPort",
    "dstPostNATPort",
    "srcMAC",
    "dstMAC",
    "usrName",
    "identSrc",
    "identHostName",
    "identNetBios",
    "identGrpName",
];

/// Keys the engine writes on generic (unmapped or failed) events.
const GENERIC_KEYS: &[&str] = &[
    "sourceCategory",
    "reason",
    "inputKind",
    "payload",
    RECORD_ID_KEY,
];
/// The key that keeps an event's own name when it goes under its event map's default id.
const EVENT_NAME_KEY: &str = "EventName";

/// One QID record: what QRadar shows for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QidRecord {
    pub name: String,
    pub description: String,
    pub severity: u8,
    pub low_level_category: u32,
}

/// One DSM event mapping: (EventID, category) to a QID record, by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventMapping {
    pub event_id: String,
    pub category: String,
    pub qid_name: String,
}

/// A custom LEEF key and the families that write it.
#[derive(Debug, Clone)]
pub struct CustomKey {
    pub key: String,
    pub families: Vec<String>,
}

#[derive(Debug)]
pub struct QradarContent {
    pub records: Vec<QidRecord>,
    pub mappings: Vec<EventMapping>,
    pub keys: Vec<CustomKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("QID name `{name}` is used with different severity or category: {first} and {second}; give one of them another qid-name")]
    ConflictingQid {
        name: String,
        first: String,
        second: String,
    },
    #[error("({event_id}, {category}) maps to `{first}` in one family and `{second}` in another; QRadar keeps one QID per pair")]
    ConflictingPair {
        event_id: String,
        category: String,
        first: String,
        second: String,
    },
}

/// Every QID, event mapping and custom key the mapping set implies.
pub fn content(set: &MappingSet) -> Result<QradarContent, ExportError> {
    let mut records: BTreeMap<String, (QidRecord, String)> = BTreeMap::new();
    let mut pairs: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |def: &EventDef, id: &str, category: &str, origin: &str| {
        let record = QidRecord {
            name: def.qid_name.clone(),
            description: def.description.clone().unwrap_or_else(|| {
                format!("Microsoft Defender {category} event `{id}`, translated by defender-dsm ({origin}).")
            }),
            severity: def.severity,
            low_level_category: def.low_level_category,
        };
        let what = |r: &QidRecord, o: &str| {
            format!(
                "severity {} category {} ({o})",
                r.severity, r.low_level_category
            )
        };
        match records.get(&record.name) {
            Some((r, o))
                if r.severity != record.severity
                    || r.low_level_category != record.low_level_category =>
            {
                return Err(ExportError::ConflictingQid {
                    name: record.name.clone(),
                    first: what(r, o),
                    second: what(&record, origin),
                });
            }
            Some(_) => {}
            None => {
                records.insert(record.name.clone(), (record.clone(), origin.to_string()));
            }
        }
        let key = (id.to_string(), category.to_string());
        match pairs.get(&key) {
            Some((name, o)) if *name != record.name => Err(ExportError::ConflictingPair {
                event_id: key.0,
                category: key.1,
                first: format!("{name} ({o})"),
                second: format!("{} ({origin})", record.name),
            }),
            Some(_) => Ok(()),
            None => {
                pairs.insert(key, (record.name, origin.to_string()));
                Ok(())
            }
        }
    };
    for family in set.families() {
        let category = family.event_category.as_str();
        let origin = format!("family {}", family.name);
        let map = &family.event_map;
        let mut ids: Vec<&String> = map.by_id.keys().collect();
        ids.sort();
        for id in ids {
            let def = map.lookup(id, category);
            if let Some(def) = def.filter(|d| !map.is_default(d)) {
                add(def, id, category, &origin)?;
            }
        }
        if let Some(d) = &map.default {
            add(d, &d.id, category, &origin)?;
        }
        for key in family.leef_key_names() {
            keys.entry(key.to_string())
                .or_default()
                .push(family.name.clone());
        }
        for engine_key in [EVENT_NAME_KEY, RECORD_ID_KEY] {
            keys.entry(engine_key.to_string())
                .or_default()
                .push(family.name.clone());
        }
    }
    for outcome in [
        Outcome::Unmapped(String::new()),
        Outcome::Failed(String::new()),
    ] {
        let id = generic_event_id(&outcome);
        let def = EventDef {
            id: id.to_string(),
            category: None,
            qid_name: format!("Defender record not translated ({})", id.to_lowercase()),
            description: Some(format!(
                "defender-dsm could not translate a Defender record ({}); the reason and the raw record are in its payload.",
                if id == "Failed" { "a mapping failed on it" } else { "no mapping claims it" }
            )),
            severity: 5,
            low_level_category: 10001,
            ecs_category: Vec::new(),
            ecs_type: Vec::new(),
        };
        add(&def, id, GENERIC_CATEGORY, "generic events")?;
        for k in GENERIC_KEYS {
            keys.entry((*k).to_string())
                .or_default()
                .push("(generic)".to_string());
        }
    }
    Ok(QradarContent {
        records: records.into_values().map(|(r, _)| r).collect(),
        mappings: pairs
            .into_iter()
            .map(|((event_id, category), (qid_name, _))| EventMapping {
                event_id,
                category,
                qid_name,
            })
            .collect(),
        keys: keys
            .into_iter()
            .filter(|(k, _)| !NORMALISED_KEYS.contains(&k.as_str()))
            .map(|(key, mut families)| {
                families.dedup();
                CustomKey { key, families }
            })
            .collect(),
    })
}

/// The files `export qradar` writes: name and text.
pub fn files(content: &QradarContent, log_source_type_id: Option<u64>) -> Vec<(String, String)> {
    let type_id = log_source_type_id.map_or(Value::Null, Value::from);
    let mut create = String::from(
        "#!/bin/sh\n# QID records for defender-dsm, one qidmap_cli.sh call each (run as root on the console).\n# Generated by `defender-dsm export qradar` from the mapping files; do not edit by hand.\nset -e\n",
    );
    let mut csv = String::new();
    for r in &content.records {
        create.push_str(&format!(
            "/opt/qradar/bin/qidmap_cli.sh -c --qname {} --qdescription {} --severity {} --lowlevelcategoryid {}\n",
            sh_quote(&r.name),
            sh_quote(&r.description),
            r.severity,
            r.low_level_category
        ));
        csv.push_str(&format!(
            ",{},{},{},{}\n",
            csv_field(&r.name),
            csv_field(&r.description),
            r.severity,
            r.low_level_category
        ));
    }
    let records: Vec<Value> = content
        .records
        .iter()
        .map(|r| {
            json!({
                "log_source_type_id": type_id,
                "name": r.name,
                "description": r.description,
                "severity": r.severity,
                "low_level_category_id": r.low_level_category,
            })
        })
        .collect();
    let mappings: Vec<Value> = content
        .mappings
        .iter()
        .map(|m| {
            json!({
                "log_source_type_id": type_id,
                "log_source_event_id": m.event_id,
                "log_source_event_category": m.category,
                "qid_record_name": m.qid_name,
            })
        })
        .collect();
    let properties: Vec<Value> = content
        .keys
        .iter()
        .map(|k| {
            json!({
                "name": format!("Defender {}", k.key),
                "leef_key": k.key,
                "description": format!("LEEF key {} written by defender-dsm ({}).", k.key, k.families.join(", ")),
                "property_type": "string",
                "regex": format!("(?:^|\\t){}=([^\\t]*)", k.key),
                "capture_group": 1,
            })
        })
        .collect();
    let pretty = |v: &Vec<Value>| {
        let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
        s.push('\n');
        s
    };
    vec![
        ("qidmap-create.sh".to_string(), create),
        ("qidmap.csv".to_string(), csv),
        ("qid-records.json".to_string(), pretty(&records)),
        ("dsm-event-mappings.json".to_string(), pretty(&mappings)),
        ("custom-properties.json".to_string(), pretty(&properties)),
    ]
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The REST import script written beside the JSON files.
pub const IMPORT_SCRIPT: &str = include_str!("qradar_import.py");
