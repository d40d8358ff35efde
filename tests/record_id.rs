//! Every event carries a deterministic id (`dsmId`): the same record gets the same id whatever
//! else changed around it, distinct records get distinct ids.

use std::collections::HashMap;
use std::path::Path;

use defender_dsm::cli::replay::{find_cases, replay_case};
use defender_dsm::mapping::{MapOptions, MappingSet};
use defender_dsm::translate::{Counts, Format, Translator};

fn ids(leef: &str) -> Vec<String> {
    leef.lines()
        .map(|l| {
            let at = l.find("\tdsmId=").expect("every event has a dsmId") + 7;
            l[at..].split('\t').next().unwrap_or_default().to_string()
        })
        .collect()
}

fn translator() -> Translator {
    Translator::new(
        MappingSet::embedded().expect("mappings"),
        MapOptions::default(),
        Default::default(),
    )
}

fn leef_of(t: &Translator, text: &str) -> String {
    let mut out = Vec::new();
    t.text(
        text,
        &"t".into(),
        None,
        &[Format::Leef],
        &mut out,
        &mut Counts::default(),
    )
    .expect("decodes");
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn fixture_events_have_distinct_stable_ids() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t = translator();
    let mut seen: HashMap<String, String> = HashMap::new();
    for case in find_cases(&root.join("fixtures")).expect("fixtures") {
        let r = replay_case(&t, &case).expect("replay");
        for id in ids(&r.leef) {
            assert_eq!(id.len(), 32, "{id}");
            if let Some(other) = seen.insert(id.clone(), case.display().to_string()) {
                panic!("{id} in both {other} and {}", case.display());
            }
        }
        // The same input again gives the same ids.
        assert_eq!(
            ids(&replay_case(&t, &case).expect("replay").leef),
            ids(&r.leef)
        );
    }
    assert!(seen.len() > 70);
}

#[test]
fn a_redelivered_record_keeps_its_id_and_another_version_gets_a_new_one() {
    let t = translator();
    let record = r#"{"time":"2026-10-14T08:31:02.1Z","tenantId":"t1","category":"AdvancedHunting-DeviceProcessEvents","properties":{"Timestamp":"2026-10-14T08:31:02Z","ActionType":"ProcessCreated","DeviceId":"d1","DeviceName":"h","ReportId":42}}"#;
    // Event Hubs redelivery: the same record in another message, with another enqueue time.
    let redelivered = record.replace("08:31:02.1Z", "08:35:00.9Z");
    let other = record.replace("\"ReportId\":42", "\"ReportId\":43");
    let (a, b, c) = (
        leef_of(&t, record),
        leef_of(&t, &redelivered),
        leef_of(&t, &other),
    );
    assert_eq!(ids(&a), ids(&b));
    assert_ne!(ids(&a), ids(&c));

    let alert = r##"{"@odata.type":"#microsoft.graph.security.alert","id":"da1","alertWebUrl":"u","category":"Execution","lastUpdateDateTime":"2026-10-14T10:00:00Z","severity":"high"}"##;
    let updated = alert.replace("10:00:00Z", "11:00:00Z");
    assert_ne!(
        ids(&leef_of(&t, alert)),
        ids(&leef_of(&t, &updated)),
        "a new version of an alert is a new event"
    );
}
