//! Every golden case under fixtures/ replays byte for byte (cases are found by walking the
//! directory; a new case needs no registration here).

use std::path::Path;

use defender_dsm::cli::replay::{diff, find_cases, replay_case};
use defender_dsm::mapping::{MapOptions, MappingSet};
use defender_dsm::translate::Translator;

fn translator(mappings: MappingSet) -> Translator {
    Translator::new(mappings, MapOptions::default(), Default::default())
}

#[test]
fn every_fixture_replays_byte_for_byte() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t =
        translator(MappingSet::load_dir(&root.join("mappings")).expect("bundled mappings load"));
    let cases = find_cases(&root.join("fixtures")).expect("fixtures directory");
    assert!(
        cases.len() >= 13,
        "expected a case per family, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for input in &cases {
        let r = replay_case(&t, input).expect("replay");
        let stem = input
            .to_string_lossy()
            .trim_end_matches(".input.json")
            .to_string();
        for (ext, actual) in [("expected.leef", &r.leef), ("expected.ecs.ndjson", &r.ecs)] {
            let path = format!("{stem}.{ext}");
            match std::fs::read_to_string(&path) {
                Ok(expected) => {
                    if let Some(d) = diff(&expected, actual) {
                        failures.push(format!("{path}:\n{d}"));
                    }
                }
                Err(e) => failures.push(format!("{path}: {e} (run `defender-dsm replay --bless`)")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden file(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn embedded_mappings_are_the_mapping_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let from_dir = MappingSet::load_dir(&root.join("mappings")).expect("directory loads");
    let embedded = MappingSet::embedded().expect("embedded loads");
    let names = |s: &MappingSet| {
        s.families()
            .iter()
            .map(|f| f.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&from_dir).len(), names(&embedded).len());
    let mut a = names(&from_dir);
    let mut b = names(&embedded);
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[test]
fn every_ecs_line_is_a_json_object_and_every_leef_line_is_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t = translator(MappingSet::embedded().expect("embedded loads"));
    for input in find_cases(&root.join("fixtures")).expect("fixtures") {
        let r = replay_case(&t, &input).expect("replay");
        for line in r.ecs.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: {e}: {line}", input.display()));
            assert!(
                v.get("@timestamp").is_some() || v.pointer("/error/message").is_some(),
                "{line}"
            );
            assert_eq!(
                v.pointer("/ecs/version").and_then(|x| x.as_str()),
                Some("8.11.0")
            );
        }
        for line in r.leef.lines() {
            assert!(line.contains(" LEEF:2.0|Microsoft|"), "{line}");
            assert!(!line.contains('\r'), "{line}");
            let attrs = line
                .splitn(7, '|')
                .nth(6)
                .expect("LEEF 2.0 has 6 header fields");
            let keys: Vec<&str> = attrs
                .split('\t')
                .map(|kv| kv.split('=').next().unwrap_or(""))
                .collect();
            let mut unique = keys.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), keys.len(), "duplicate LEEF keys in {line}");
            assert_eq!(keys.first(), Some(&"cat"), "{line}");
            for k in keys {
                assert!(
                    !k.is_empty() && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'),
                    "key {k:?} in {line}"
                );
            }
        }
    }
}

#[test]
fn reused_worker_state_gives_the_same_output_as_fresh_state() {
    // Same table, columns in changing order and number, interleaved with another family: the
    // per-worker shape cache must never carry one record's resolution into another.
    let records = [
        r#"{"category":"AdvancedHunting-DeviceLogonEvents","tenantId":"t","properties":{"Timestamp":"2026-01-01T00:00:00Z","ActionType":"LogonFailed","AccountName":"a","RemoteIP":"192.0.2.1","NewColumn":"x"}}"#,
        r#"{"category":"AdvancedHunting-DeviceLogonEvents","tenantId":"t","properties":{"AccountName":"b","Timestamp":"2026-01-01T00:00:01Z","ActionType":"LogonSuccess","RemoteIP":"192.0.2.2"}}"#,
        r#"{"category":"AdvancedHunting-DeviceInfo","tenantId":"t","properties":{"Timestamp":"2026-01-01T00:00:02Z","DeviceName":"h","PublicIP":"198.51.100.7"}}"#,
        r#"{"category":"AdvancedHunting-DeviceLogonEvents","tenantId":"t","properties":{"Timestamp":"2026-01-01T00:00:03Z","ActionType":"LogonFailed","RemoteIP":"192.0.2.3","OtherNew":1,"AccountName":"c"}}"#,
        r#"{"category":"AdvancedHunting-DeviceLogonEvents","tenantId":"t","properties":{"Timestamp":"2026-01-01T00:00:04Z","ActionType":"LogonFailed","AccountName":"d","RemoteIP":"192.0.2.4","NewColumn":"y"}}"#,
    ];
    let t = translator(MappingSet::embedded().expect("mappings"));
    let origin: std::sync::Arc<str> = std::sync::Arc::from("mixed");
    let formats = [
        defender_dsm::translate::Format::Leef,
        defender_dsm::translate::Format::Ecs,
    ];
    let mut together = Vec::new();
    let mut counts = Default::default();
    t.text(
        &records.join("\n"),
        &origin,
        None,
        &formats,
        &mut together,
        &mut counts,
    )
    .expect("decodes");
    let mut separate = Vec::new();
    for r in records {
        t.text(r, &origin, None, &formats, &mut separate, &mut counts)
            .expect("decodes");
    }
    assert_eq!(
        String::from_utf8(together).unwrap(),
        String::from_utf8(separate).unwrap()
    );
}
