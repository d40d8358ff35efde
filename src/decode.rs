//! Payload shapes -> records.
//!
//! A text holds one JSON document or several (NDJSON, or concatenated documents). A document is
//! an Event Hubs message body `{"records":[...]}`, a list page `{"value":[...]}`, a JSON array of
//! items, or one item. Each item becomes a [`RawRecord`] whose source kind is the one the caller
//! forced, or the one its shape shows.

use std::sync::Arc;

use std::borrow::Cow;

use crate::json::{Json, JsonStream, FAN_OUT_TEXT_CAP};

use crate::event::{Position, RawRecord, SourceKind};

#[derive(Debug, thiserror::Error)]
#[error("{origin}:{line}:{column}: {reason}")]
pub struct DecodeError {
    pub origin: Arc<str>,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

/// Decodes every document in `text`, calling `emit` for each record in order. Records of the
/// documents before a malformed one are emitted before the error is returned, so nothing already
/// read is lost.
pub fn decode_text<'t>(
    text: &'t str,
    origin: &Arc<str>,
    forced: Option<SourceKind>,
    mut emit: impl FnMut(RawRecord<'t>),
) -> Result<usize, DecodeError> {
    let mut stream = JsonStream::new(text);
    let mut count = 0;
    // Line numbers are counted forward from the previous document, so a large NDJSON input is
    // read in linear time.
    let (mut counted_to, mut line) = (0usize, 1usize);
    loop {
        let start = skip_ws(text, stream.byte_offset());
        let doc = match stream.next() {
            None => return Ok(count),
            Some(Ok(doc)) => doc,
            Some(Err(e)) => {
                return Err(DecodeError {
                    origin: origin.clone(),
                    line: e.line(),
                    column: e.column(),
                    reason: format!("malformed JSON: {e}"),
                })
            }
        };
        line += newlines(&text.as_bytes()[counted_to..start]);
        counted_to = start;
        if !matches!(doc, Json::Object(_) | Json::Array(_)) {
            let at = &text[..start];
            let column = 1 + at.len() - at.rfind('\n').map_or(0, |i| i + 1);
            return Err(DecodeError {
                origin: origin.clone(),
                line,
                column,
                reason: format!(
                    "a JSON {} where an object or array (a Defender record, or a list or page of them) belongs",
                    kind_name(&doc)
                ),
            });
        }
        count += split_document(doc, forced, |index, source, payload| {
            emit(RawRecord {
                source,
                position: Position {
                    origin: origin.clone(),
                    line,
                    index,
                },
                payload,
                received: None,
            })
        });
    }
}

fn kind_name(doc: &Json) -> &'static str {
    match doc {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Int(_) | Json::UInt(_) | Json::Float(_) => "number",
        Json::Str(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn skip_ws(text: &str, mut at: usize) -> usize {
    let b = text.as_bytes();
    while at < b.len() && b[at].is_ascii_whitespace() {
        at += 1;
    }
    at
}

fn newlines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

/// Splits one document into items; returns how many it emitted.
pub fn split_document<'t>(
    doc: Json<'t>,
    forced: Option<SourceKind>,
    mut emit: impl FnMut(usize, Option<SourceKind>, Json<'t>),
) -> usize {
    let mut n = 0;
    let mut one_item = |item: Json<'t>, envelope_kind: Option<SourceKind>| {
        let kind = forced.or(envelope_kind).or_else(|| detect(&item));
        fan_out(item, kind, &mut |one| {
            emit(n, kind, one);
            n += 1;
        });
    };
    let (items, envelope_kind) = match doc {
        Json::Object(mut obj) => match crate::correlate::take_bundle(&mut obj) {
            Some(bundle) => {
                let kind = Some(SourceKind::MdeVulnerability);
                crate::correlate::join(bundle, |item| one_item(item, kind));
                (Vec::new(), None)
            }
            None => match envelope_list(&mut obj) {
                Some((items, kind)) => (items, kind),
                None => (vec![Json::Object(obj)], None),
            },
        },
        Json::Array(items) => (items, None),
        other => (vec![other], None),
    };
    for item in items {
        one_item(item, envelope_kind);
    }
    n
}

/// An incident with its alerts (`$expand=alerts`) becomes one record per alert, and a Defender
/// for Endpoint alert one record per evidence item, each holding that one item in place of the
/// list, as Elastic's inputs split them: every event then names one alert's or one entity's
/// hosts, files and users. Without items the record stays whole. The parent's members are
/// carried whole into the first record, and with long strings cut ([`FAN_OUT_TEXT_CAP`]) into
/// the others.
fn fan_out<'t>(item: Json<'t>, kind: Option<SourceKind>, emit: &mut impl FnMut(Json<'t>)) {
    let key = match kind {
        Some(SourceKind::GraphIncident) => "alerts",
        Some(SourceKind::MdeAlert) => "evidence",
        _ => return emit(item),
    };
    let Json::Object(mut members) = item else {
        return emit(item);
    };
    let at = members
        .iter()
        .position(|(k, v)| k == key && matches!(v, Json::Array(a) if !a.is_empty()));
    let Some(at) = at else {
        return emit(Json::Object(members));
    };
    let Json::Array(list) = std::mem::replace(&mut members[at].1, Json::Null) else {
        return emit(Json::Object(members));
    };
    let mut capped: Option<Vec<_>> = None;
    for (i, one) in list.into_iter().enumerate() {
        let mut copy = match i {
            0 => members.clone(),
            _ => capped
                .get_or_insert_with(|| {
                    let mut c = members.clone();
                    let item = if key == "alerts" {
                        "alert"
                    } else {
                        "evidence item"
                    };
                    let whole_in = format!("the event of its first {item}");
                    c.iter_mut()
                        .for_each(|(_, v)| v.cap_strings(FAN_OUT_TEXT_CAP, &whole_in));
                    c
                })
                .clone(),
        };
        copy[at].1 = one;
        emit(Json::Object(copy));
    }
}

/// `{"records":[...]}` (Event Hubs) or `{"value":[...]}` (Graph / MDE list page), with any other
/// envelope keys (`@odata.context`, `@odata.nextLink`) ignored.
type Members<'t> = Vec<(Cow<'t, str>, Json<'t>)>;

fn envelope_list<'t>(obj: &mut Members<'t>) -> Option<(Vec<Json<'t>>, Option<SourceKind>)> {
    // `results`: third-party SIEM API tools re-wrap the bare array that way.
    for (key, kind) in [
        ("records", Some(SourceKind::EventHub)),
        ("value", None),
        ("results", None),
    ] {
        let at = obj
            .iter()
            .position(|(k, v)| k == key && matches!(v, Json::Array(_)));
        if let (Some(at), false) = (at, looks_like_item(obj)) {
            if let (_, Json::Array(items)) = obj.swap_remove(at) {
                return Some((items, kind));
            }
        }
    }
    None
}

fn looks_like_item(obj: &Members) -> bool {
    obj.iter()
        .any(|(k, _)| k == "category" || k == "id" || k == "AlertId")
}

/// The source kind an item's shape shows, if any.
pub fn detect(item: &Json) -> Option<SourceKind> {
    let obj = item.as_object()?;
    let has = |k: &str| obj.iter().any(|(name, _)| name == k);
    let str_of = |k: &str| item.get(k).and_then(Json::as_str).unwrap_or("");
    let odata = str_of("@odata.type");
    if str_of("category").starts_with("AdvancedHunting-")
        || (has("properties") && has("category") && has("tenantId"))
    {
        return Some(SourceKind::EventHub);
    }
    if odata.ends_with("security.alert") || has("alertWebUrl") || has("providerAlertId") {
        return Some(SourceKind::GraphAlert);
    }
    if odata.ends_with("security.incident") || (has("incidentWebUrl") && has("displayName")) {
        return Some(SourceKind::GraphIncident);
    }
    if has("AlertTime") || has("LastProcessedTimeUtc") || (has("AlertId") && has("AlertTitle")) {
        return Some(SourceKind::SiemAlert);
    }
    if has("alertCreationTime") || (has("machineId") && has("detectionSource")) {
        return Some(SourceKind::MdeAlert);
    }
    if has("affectedMachine")
        || has("cveId")
        || has("CveId")
        || has("cvssV3")
        || has("exposedMachines")
        || str_of("id").starts_with("CVE-")
    {
        return Some(SourceKind::MdeVulnerability);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str, forced: Option<SourceKind>) -> Result<Vec<RawRecord<'_>>, DecodeError> {
        let mut out = Vec::new();
        decode_text(text, &Arc::from("t.json"), forced, |r| out.push(r))?;
        Ok(out)
    }

    #[test]
    fn every_shape_splits_into_records() {
        let eh = r#"{"records":[{"category":"AdvancedHunting-DeviceInfo","properties":{}},
                     {"category":"AdvancedHunting-Unknown","properties":{}}]}"#;
        let recs = decode(eh, None).unwrap();
        assert_eq!(recs.len(), 2);
        assert!(recs.iter().all(|r| r.source == Some(SourceKind::EventHub)));
        assert_eq!(recs[1].position.index, 1);

        let page = r#"{"@odata.context":"x","value":[{"id":"a","alertWebUrl":"u"},{"id":"i","incidentWebUrl":"u","displayName":"d"}]}"#;
        let kinds: Vec<_> = decode(page, None)
            .unwrap()
            .into_iter()
            .map(|r| r.source)
            .collect();
        assert_eq!(
            kinds,
            [
                Some(SourceKind::GraphAlert),
                Some(SourceKind::GraphIncident)
            ]
        );

        let siem = r#"[{"AlertTime":"2020-01-01T00:00:00Z","AlertId":"1"}]"#;
        assert_eq!(
            decode(siem, None).unwrap()[0].source,
            Some(SourceKind::SiemAlert)
        );

        let single =
            r#"{"category":"AdvancedHunting-DeviceEvents","properties":{},"tenantId":"t"}"#;
        assert_eq!(decode(single, None).unwrap().len(), 1);

        let unknown = r#"{"hello":"world"}"#;
        assert_eq!(decode(unknown, None).unwrap()[0].source, None);
        assert_eq!(
            decode(unknown, Some(SourceKind::MdeAlert)).unwrap()[0].source,
            Some(SourceKind::MdeAlert)
        );
    }

    #[test]
    fn ndjson_lines_are_numbered_and_a_bad_line_is_named() {
        let text = "{\"id\":\"a\",\"alertWebUrl\":\"u\"}\r\n\n{\"id\":\"b\",\"alertWebUrl\":\"u\"}\n{\"id\": oops}\n";
        let mut seen = Vec::new();
        let err = decode_text(text, &Arc::from("in.ndjson"), None, |r| {
            seen.push(r.position.line)
        })
        .unwrap_err();
        assert_eq!(seen, [1, 3], "records before the bad line are kept");
        assert_eq!(err.line, 4);
        assert!(err.to_string().starts_with("in.ndjson:4:"), "{err}");
    }

    #[test]
    fn a_large_ndjson_input_is_read_in_linear_time_with_exact_lines() {
        let line = r#"{"category":"AdvancedHunting-DeviceInfo","properties":{"Timestamp":"2026-01-01T00:00:00Z"},"tenantId":"t"}"#;
        let text = format!("{}\n", vec![line; 50_000].join("\n"));
        let mut last = 0;
        let n = decode_text(&text, &Arc::from("big"), None, |r| last = r.position.line).unwrap();
        assert_eq!((n, last), (50_000, 50_000));
    }

    #[test]
    fn pretty_printed_document_counts_as_one() {
        let text = "[\n {\"AlertId\": \"1\", \"AlertTitle\": \"t\"},\n {\"AlertId\": \"2\", \"AlertTitle\": \"t\"}\n]\n";
        let recs = decode(text, None).unwrap();
        assert_eq!(recs.len(), 2);
        assert!(recs.iter().all(|r| r.position.line == 1));
    }

    #[test]
    fn long_parent_texts_are_whole_in_the_first_fanned_out_record_only() {
        let title = "t".repeat(100_000);
        let alerts = vec!["{}"; 1000].join(",");
        let page = format!(
            r#"{{"value":[{{"id":"i","incidentWebUrl":"u","displayName":"{title}","alerts":[{alerts}]}}]}}"#
        );
        let mut records = Vec::new();
        let origin: Arc<str> = Arc::from("page");
        decode_text(&page, &origin, None, |r| {
            records.push(r.payload.into_owned())
        })
        .unwrap();
        assert_eq!(records.len(), 1000);
        let name = |r: &Json| {
            r.get("displayName")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(name(&records[0]), title);
        for r in &records[1..] {
            let cut = name(r);
            assert!(cut.len() < FAN_OUT_TEXT_CAP + 100, "{}", cut.len());
            assert!(cut.starts_with(&title[..FAN_OUT_TEXT_CAP]));
            assert!(
                cut.ends_with("…[cut by defender-dsm from 100000 bytes; whole in the event of its first alert]"),
                "{cut}"
            );
        }
    }
}
