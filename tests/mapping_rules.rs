//! How field rules behave on records: conversions that fail, required fields, conditions, for
//! rules that read a member of the carried object (the mapping loop's fast path) and for others.

use std::sync::Arc;

use defender_dsm::mapping::{MapOptions, MappingSet};
use defender_dsm::translate::{Counts, Format, Translator};

const FAMILY: &str = r#"<dsm-mapping family="a">
  <select source="eventhub"><equals path="category" value="AdvancedHunting-A"/></select>
  <event-name path="properties.ActionType" default="A"/>
  <event-category value="A"/>
  <device-time path="properties.Timestamp"/>
  <field path="properties.Count" leef="Count" ecs="a.count" convert="trim int"/>
  <field path="properties.Name" ecs="a.name" convert="lowercase"/>
  <field path="properties.Addr" leef="src" ecs="source.ip" convert="ip"/>
  <field path="properties.Must" ecs="a.must" required="true"/>
  <group>
    <when><equals path="properties.Kind" value="x"/></when>
    <field path="properties.Name" ecs="a.when_x"/>
    <field path="properties.Count" ecs="a.when_x_count" convert="int"/>
  </group>
  <carry path="properties" ecs="vendor"/>
  <event-map><default qid-name="A" severity="3" low-level-category="8052"/></event-map>
</dsm-mapping>
"#;

fn ecs(record: &str) -> (serde_json::Value, Counts) {
    let set =
        MappingSet::from_texts(vec![("a.xml".to_string(), FAMILY.to_string())]).expect("loads");
    let translator = Translator::new(set, MapOptions::default(), Default::default());
    let mut out = Vec::new();
    let mut counts = Counts::default();
    translator
        .text(
            record,
            &Arc::from("test"),
            None,
            &[Format::Ecs],
            &mut out,
            &mut counts,
        )
        .expect("decodes");
    let doc = serde_json::from_slice(&out).expect("one ECS document");
    (doc, counts)
}

fn record(props: &str) -> String {
    format!(
        r#"{{"category":"AdvancedHunting-A","properties":{{"Timestamp":"2026-11-22T10:00:00Z","Must":"m",{props}}}}}"#
    )
}

#[test]
fn member_conversions_apply_and_a_failed_one_names_its_rule() {
    let (doc, counts) = ecs(&record(
        r#""Count":" 12 ","Name":"MiXed","Addr":"not-an-ip","Kind":"y""#,
    ));
    assert_eq!(doc["a"]["count"], 12);
    assert_eq!(doc["a"]["name"], "mixed");
    assert!(
        doc.get("source").is_none(),
        "a failed conversion leaves the field out"
    );
    let errors = doc["error"]["message"].as_array().expect("errors listed");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = errors[0].as_str().unwrap();
    assert!(
        e.starts_with("a.xml:8:") && e.contains("properties.Addr") && e.contains("not-an-ip"),
        "{e}"
    );
    assert_eq!(counts.conversion_errors, 1);
    assert!(doc["a"].get("when_x").is_none(), "condition false: skipped");
}

#[test]
fn a_condition_that_holds_applies_its_whole_group() {
    let (doc, _) = ecs(&record(r#""Count":"7","Name":"N","Kind":"x""#));
    assert_eq!(doc["a"]["when_x"], "N");
    assert_eq!(doc["a"]["when_x_count"], 7);
    assert!(doc.get("error").is_none());
}

#[test]
fn a_missing_required_member_fails_the_record() {
    let text = r#"{"category":"AdvancedHunting-A","properties":{"Timestamp":"2026-11-22T10:00:00Z","Name":"n"}}"#;
    let (doc, counts) = ecs(text);
    assert_eq!(counts.failed, 1);
    let message = doc["error"]["message"].to_string();
    assert!(
        message.contains("required field `properties.Must`") && message.contains("a.xml:9"),
        "{message}"
    );
}
