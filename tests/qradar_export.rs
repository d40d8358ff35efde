//! `export qradar` covers every (EventID, category) pair the fixtures make QRadar receive, and
//! a custom property for every custom LEEF key they carry.

use std::collections::BTreeSet;
use std::path::Path;

use defender_dsm::cli::replay::{find_cases, replay_case};
use defender_dsm::export::qradar::{self, NORMALISED_KEYS};
use defender_dsm::mapping::{MapOptions, MappingSet};
use defender_dsm::translate::Translator;

/// (EventID, cat, keys) of a LEEF 2.0 line with the default tab delimiter.
fn parse(line: &str) -> (String, String, Vec<String>) {
    let leef = &line[line.find("LEEF:").expect("a LEEF line")..];
    let fields: Vec<&str> = leef.splitn(7, '|').collect();
    assert_eq!(fields.len(), 7, "{line}");
    let attrs: Vec<&str> = fields[6].split('\t').collect();
    let cat = attrs[0]
        .strip_prefix("cat=")
        .expect("cat comes first")
        .to_string();
    let keys = attrs
        .iter()
        .filter_map(|a| a.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    (fields[4].to_string(), cat, keys)
}

#[test]
fn every_pair_and_key_the_fixtures_emit_is_exported() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let set = MappingSet::load_dir(&root.join("mappings")).expect("mappings");
    let content = qradar::content(&set).expect("the bundled mappings export");
    let pairs: BTreeSet<(String, String)> = content
        .mappings
        .iter()
        .map(|m| (m.event_id.clone(), m.category.clone()))
        .collect();
    let records: BTreeSet<&str> = content.records.iter().map(|r| r.name.as_str()).collect();
    for m in &content.mappings {
        assert!(
            records.contains(m.qid_name.as_str()),
            "{m:?} names no record"
        );
    }
    let keys: BTreeSet<&str> = content.keys.iter().map(|k| k.key.as_str()).collect();

    let t = Translator::new(set, MapOptions::default(), Default::default());
    let (mut seen, mut missing) = (0, Vec::new());
    for case in find_cases(&root.join("fixtures")).expect("fixtures") {
        let r = replay_case(&t, &case).expect("replay");
        for line in r.leef.lines() {
            let (id, cat, line_keys) = parse(line);
            seen += 1;
            if !pairs.contains(&(id.clone(), cat.clone())) {
                missing.push(format!("{}: ({id}, {cat})", case.display()));
            }
            for k in line_keys {
                // Unknown tables carry their columns under their own names: open by nature.
                if cat != "AdvancedHunting"
                    && !NORMALISED_KEYS.contains(&k.as_str())
                    && !keys.contains(k.as_str())
                {
                    missing.push(format!("{}: custom key {k}", case.display()));
                }
            }
        }
    }
    assert!(seen > 50, "only {seen} LEEF events replayed");
    assert!(missing.is_empty(), "not exported:\n{}", missing.join("\n"));
}

#[test]
fn conflicting_qid_definitions_are_refused() {
    let family = |name: &str, cat: &str, sev: u8| {
        format!(
            r#"<dsm-mapping family="{name}">
  <select source="eventhub"><equals path="category" value="{cat}"/></select>
  <event-name path="properties.ActionType"/>
  <event-category value="{cat}"/>
  <device-time path="properties.Timestamp"/>
  <event-map><default qid-name="Same name" severity="{sev}" low-level-category="8052"/></event-map>
</dsm-mapping>
"#
        )
    };
    let (a, b) = (family("a", "A", 3), family("b", "B", 7));
    let set = MappingSet::from_texts(vec![("a.xml".into(), a), ("b.xml".into(), b)])
        .expect("valid files");
    let err = qradar::content(&set).expect_err("one QID name, two severities");
    let text = err.to_string();
    assert!(
        text.contains("`Same name`") && text.contains("family a") && text.contains("family b"),
        "{text}"
    );
}
