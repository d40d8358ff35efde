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
