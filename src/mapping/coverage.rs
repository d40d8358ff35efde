//! What a family leaves unused in real input: the columns and AdditionalFields keys no field
//! reads, and the fields that never get a value. Mapping authors run it (`defender-dsm
//! coverage`) on fresh payloads to see what a new Defender column or ActionType adds.

use std::collections::BTreeMap;

use super::family::{Eval, Family, Source};
use super::scratch::Scratch;
use crate::json::Json;

/// What one record shows about its family's mapping.
pub struct Inspection {
    /// The record's own event name (ActionType, alert category ...), before any event-map
    /// default replaces it.
    pub event_name: String,
    /// Members of the carried object: name, read by a field, listed in the column dictionary.
    pub columns: Vec<(String, bool, bool)>,
    /// AdditionalFields keys: name, read by a field.
    pub additional_fields: Vec<(String, bool)>,
    /// Per rule of the family: whether it gave a value.
    pub rule_hits: Vec<bool>,
}

const ADDITIONAL_FIELDS: &str = "AdditionalFields";

impl Family {
    /// Evaluates every field of the family on `rec` (whatever its condition or order).
    pub fn inspect<'a>(&'a self, rec: &'a Json<'a>, cache: &mut Scratch) -> Inspection {
        cache.clear();
        let mut args: Vec<Option<&'a Json<'a>>> = vec![None; self.members.args];
        let mut columns = Vec::new();
        let mut additional_fields = Vec::new();
        if let Some(Json::Object(obj)) = self.carry.as_ref().and_then(|c| c.path.node(rec)) {
            for (k, v) in obj {
                let m = self
                    .members
                    .keys
                    .get(k.as_ref())
                    .copied()
                    .unwrap_or_default();
                if let Some(a) = m.arg {
                    args[a] = Some(v);
                }
                columns.push((k.to_string(), m.arg.is_some(), m.column.is_some()));
                if k == ADDITIONAL_FIELDS {
                    let read = self.additional_fields_read(m.arg);
                    let parsed;
                    let object = match v {
                        Json::Str(s) => {
                            parsed = Json::parse_owned(s);
                            parsed.as_ref()
                        }
                        other => Some(other),
                    };
                    if let Some(Json::Object(members)) = object {
                        for (key, _) in members {
                            let used = read.iter().any(|r| r == key);
                            additional_fields.push((key.to_string(), used));
                        }
                    }
                }
            }
        }
        let mut errors = Vec::new();
        let rule_hits = self
            .rules
            .iter()
            .map(|r| matches!(r.eval(rec, &args, cache, &mut errors), Eval::Value(_)))
            .collect();
        let event_name = match self.event_name.eval(rec, &args, cache, &mut errors) {
            Eval::Value(v) => v.to_text().into_owned(),
            _ => String::new(),
        };
        Inspection {
            event_name,
            columns,
            additional_fields,
            rule_hits,
        }
    }

    /// The AdditionalFields keys some field reads (`properties.AdditionalFields.Key`).
    fn additional_fields_read(&self, member: Option<usize>) -> Vec<String> {
        let Some(member) = member else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        for rule in self
            .rules
            .iter()
            .chain([&self.event_name, &self.device_time])
        {
            for s in &rule.sources {
                if let Source::Member(i, rest) = s {
                    if *i == member {
                        keys.extend(rest.first_key().map(str::to_string));
                    }
                }
            }
        }
        keys
    }

    /// A field as a report names it: `file:line path -> targets`.
    pub fn describe_rule(&self, index: usize) -> String {
        let r = &self.rules[index];
        let mut to: Vec<String> = r.targets.clone();
        if let Some((k, _)) = &r.leef {
            to.insert(0, format!("LEEF {k}"));
        }
        format!("{}:{} {} -> {}", r.file, r.pos.line, r.what, to.join(", "))
    }
}

/// Totals over many records of one family and event name.
#[derive(Default)]
pub struct Tally {
    pub records: u64,
    /// Column -> (records with it, read by a field, in the dictionary).
    pub columns: BTreeMap<String, (u64, bool, bool)>,
    pub additional_fields: BTreeMap<String, (u64, bool)>,
    /// Per rule: records where it gave a value.
    pub rule_hits: Vec<u64>,
}

impl Tally {
    pub fn add(&mut self, i: &Inspection) {
        self.records += 1;
        for (name, read, known) in &i.columns {
            let e = self
                .columns
                .entry(name.clone())
                .or_insert((0, *read, *known));
            e.0 += 1;
        }
        for (name, read) in &i.additional_fields {
            self.additional_fields
                .entry(name.clone())
                .or_insert((0, *read))
                .0 += 1;
        }
        if self.rule_hits.len() < i.rule_hits.len() {
            self.rule_hits.resize(i.rule_hits.len(), 0);
        }
        for (n, hit) in self.rule_hits.iter_mut().zip(&i.rule_hits) {
            *n += u64::from(*hit);
        }
    }
}
