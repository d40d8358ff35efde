//! The Defender for Endpoint vulnerability join: `/api/vulnerabilities` (one item per CVE),
//! `/api/machines` (one per device) and `/api/vulnerabilities/machinesVulnerabilities` (one per
//! device × software × CVE) become one record per row of the last, the CVE's item with the
//! device and software under `affectedMachine`, the shape Elastic's vulnerability data stream
//! builds. Pure: the input hands over the three lists it fetched as one bundle document.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::json::{Json, FAN_OUT_TEXT_CAP};

type Members<'t> = Vec<(Cow<'t, str>, Json<'t>)>;

/// A bundle's lists and the time it was fetched.
pub struct Bundle<'t> {
    pub vulnerabilities: Vec<Json<'t>>,
    pub machines: Vec<Json<'t>>,
    pub rows: Vec<Json<'t>>,
    /// `fetchedDateTime`, set by the input that fetched the lists: the event time of a row
    /// whose CVE and device are both unknown (the lists were fetched at different moments).
    pub fetched: Option<Json<'t>>,
    /// `tenantId`, set by the poller: the tenant the lists came from, carried into every record.
    pub tenant: Option<Json<'t>>,
}

/// The bundle, when `obj` is one: `machinesVulnerabilities` is required, the other lists are
/// optional (a row without its CVE or device keeps what the row itself says).
pub fn take_bundle<'t>(obj: &mut Members<'t>) -> Option<Bundle<'t>> {
    let has_rows = obj
        .iter()
        .any(|(k, v)| k == "machinesVulnerabilities" && matches!(v, Json::Array(_)));
    if !has_rows {
        return None;
    }
    let mut take = |key: &str| match obj.iter().position(|(k, _)| k == key) {
        Some(i) => match obj.swap_remove(i).1 {
            Json::Array(items) => items,
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    let (vulnerabilities, machines, rows) = (
        take("vulnerabilities"),
        take("machines"),
        take("machinesVulnerabilities"),
    );
    let member = |name: &str| obj.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (fetched, tenant) = (member("fetchedDateTime"), member("tenantId"));
    Some(Bundle {
        vulnerabilities,
        machines,
        rows,
        fetched,
        tenant,
    })
}

/// One record per (CVE, device, software) row, then one per CVE no row names (a CVE with no
/// exposed device is still news to a vulnerability dashboard, and nothing fetched is dropped),
/// each handed to `emit` as it is made, so that a bundle of many rows is never held joined.
pub fn join<'t>(bundle: Bundle<'t>, mut emit: impl FnMut(Json<'t>)) {
    let Bundle {
        vulnerabilities,
        machines,
        rows,
        fetched,
        tenant,
    } = bundle;
    let by_id = |items: Vec<Json<'t>>| -> HashMap<String, Members<'t>> {
        items
            .into_iter()
            .filter_map(|item| match item {
                Json::Object(m) => {
                    let id = m
                        .iter()
                        .find(|(k, _)| k == "id")
                        .and_then(|(_, v)| v.as_str())?
                        .to_string();
                    Some((id, m))
                }
                _ => None,
            })
            .collect()
    };
    let cve_order: Vec<String> = vulnerabilities
        .iter()
        .filter_map(|v| v.get("id").and_then(Json::as_str).map(str::to_string))
        .collect();
    let vulnerabilities = by_id(vulnerabilities);
    let machines = by_id(machines);
    let mut named: std::collections::HashSet<String> = std::collections::HashSet::new();
    // CVEs already carried whole into a record, with their capped copy once made.
    let mut capped: HashMap<String, Option<Members<'t>>> = HashMap::new();
    for row in rows {
        let Json::Object(row) = row else { continue };
        let text = |k: &str| {
            row.iter()
                .find(|(name, _)| name == k)
                .and_then(|(_, v)| v.as_str())
                .map(str::to_string)
        };
        let (cve, machine_id) = (text("cveId"), text("machineId"));
        if let Some(c) = &cve {
            named.insert(c.clone());
        }
        // The device's inventory first, the row's own members over it (its `id` is the
        // row's composite id; the device id stays in `machineId`).
        let mut affected: Members<'t> = machine_id
            .as_deref()
            .and_then(|id| machines.get(id).cloned())
            .unwrap_or_default();
        for (k, v) in row {
            match affected.iter_mut().find(|(name, _)| *name == k) {
                Some(slot) => slot.1 = v,
                None => affected.push((k, v)),
            }
        }
        let first_of_cve = cve.as_ref().is_none_or(|c| !capped.contains_key(c));
        let mut record: Members<'t> = match cve.as_deref().and_then(|c| vulnerabilities.get(c)) {
            // The CVE's long texts (its description) whole in its first row's record only.
            Some(v) if first_of_cve => {
                if let Some(c) = &cve {
                    capped.insert(c.clone(), None);
                }
                v.clone()
            }
            Some(v) => capped
                .get_mut(cve.as_deref().unwrap_or_default())
                .map(|slot| {
                    slot.get_or_insert_with(|| {
                        let mut c = v.clone();
                        c.iter_mut().for_each(|(_, v)| {
                            v.cap_strings(FAN_OUT_TEXT_CAP, "the first event of this CVE")
                        });
                        c
                    })
                    .clone()
                })
                .unwrap_or_else(|| v.clone()),
            None => {
                let mut fallback: Members<'t> = Vec::new();
                if let Some(c) = &cve {
                    fallback.push((Cow::Borrowed("id"), Json::Str(c.clone().into())));
                    fallback.push((Cow::Borrowed("name"), Json::Str(c.clone().into())));
                }
                if let Some(s) = affected
                    .iter()
                    .find(|(k, _)| k == "severity")
                    .map(|(_, v)| v.clone())
                {
                    fallback.push((Cow::Borrowed("severity"), s));
                }
                fallback
            }
        };
        record.retain(|(k, _)| k != "affectedMachine");
        if let Some(t) = &fetched {
            record.push((Cow::Borrowed("fetchedDateTime"), t.clone()));
        }
        if let Some(t) = &tenant {
            record.push((Cow::Borrowed("tenantId"), t.clone()));
        }
        record.push((Cow::Borrowed("affectedMachine"), Json::Object(affected)));
        emit(Json::Object(record));
    }
    for id in cve_order {
        if named.contains(&id) {
            continue;
        }
        if let Some(mut v) = vulnerabilities.get(&id).cloned() {
            if let Some(t) = &fetched {
                v.push((Cow::Borrowed("fetchedDateTime"), t.clone()));
            }
            if let Some(t) = &tenant {
                v.push((Cow::Borrowed("tenantId"), t.clone()));
            }
            emit(Json::Object(v));
            named.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Json<'static> {
        Json::parse_owned(s).unwrap()
    }

    #[test]
    fn rows_get_their_cve_and_device() {
        let mut bundle = match parse(
            r#"{"vulnerabilities":[{"id":"CVE-1","name":"CVE-1","cvssV3":7.5,"severity":"High"},
                                   {"id":"CVE-2","name":"CVE-2","cvssV3":4.0,"severity":"Low"}],
                "machines":[{"id":"m1","computerDnsName":"pc1","osPlatform":"Windows11"}],
                "fetchedDateTime":"2026-01-01T00:00:00Z",
                "machinesVulnerabilities":[
                  {"id":"m1-_-CVE-1-_-x","cveId":"CVE-1","machineId":"m1","productName":"edge","severity":"High"},
                  {"id":"m2-_-CVE-9-_-y","cveId":"CVE-9","machineId":"m2","productName":"zip","severity":"Low"}]}"#,
        ) {
            Json::Object(m) => m,
            _ => unreachable!(),
        };
        let mut out = Vec::new();
        join(take_bundle(&mut bundle).unwrap(), |r| out.push(r));
        assert_eq!(out.len(), 3);
        let first = &out[0];
        assert_eq!(first.get("cvssV3"), Some(&Json::Float(7.5)));
        let am = first.get("affectedMachine").unwrap();
        assert_eq!(
            am.get("computerDnsName").and_then(Json::as_str),
            Some("pc1")
        );
        assert_eq!(am.get("id").and_then(Json::as_str), Some("m1-_-CVE-1-_-x"));
        assert_eq!(am.get("productName").and_then(Json::as_str), Some("edge"));
        // Unknown CVE and device: the row alone, with the CVE as id and the row's severity.
        let second = &out[1];
        assert_eq!(second.get("id").and_then(Json::as_str), Some("CVE-9"));
        assert_eq!(second.get("severity").and_then(Json::as_str), Some("Low"));
        assert_eq!(
            second
                .get("affectedMachine")
                .and_then(|a| a.get("computerDnsName")),
            None
        );
        // A CVE no row names comes alone, stamped with the fetch time.
        assert_eq!(out[2].get("id").and_then(Json::as_str), Some("CVE-2"));
        assert_eq!(
            out[2].get("fetchedDateTime").and_then(Json::as_str),
            Some("2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn other_objects_are_not_bundles() {
        let Json::Object(mut obj) = parse(r#"{"value":[1]}"#) else {
            unreachable!()
        };
        assert!(take_bundle(&mut obj).is_none());
    }
}
