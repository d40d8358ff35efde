//! Mapping files with mistakes: every problem is reported at once, each with file:line:column.

use defender_dsm::mapping::MappingSet;

fn load(files: &[(&str, &str)]) -> Result<MappingSet, String> {
    MappingSet::from_texts(
        files
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect(),
    )
    .map_err(|e| e.to_string())
}

const GOOD: &str = r#"<dsm-mapping family="a">
  <select source="eventhub"><equals path="category" value="AdvancedHunting-A"/></select>
  <event-name path="properties.ActionType" default="A"/>
  <event-category value="A"/>
  <device-time path="properties.Timestamp"/>
  <field path="properties.X" leef="X" ecs="x.y"/>
  <event-map><default qid-name="A" severity="3" low-level-category="8052"/></event-map>
</dsm-mapping>
"#;

#[test]
fn a_good_file_loads() {
    let set = load(&[("a.xml", GOOD)]).expect("loads");
    assert_eq!(set.families().len(), 1);
}

#[test]
fn all_errors_are_reported_with_positions() {
    let bad = r#"<dsm-mapping family="b" colour="red">
  <select source="eventhub nowhere"><equals path="category" value="AdvancedHunting-B"/></select>
  <event-name path="properties..ActionType"/>
  <event-category value="B"/>
  <device-time path="properties.Timestamp"/>
  <field path="properties.X" leef="bad key" ecs="x.y" convert="lowercase frobnicate"/>
  <field path="properties.Y" leef="cat"/>
  <field path="properties.Z" regex="(unclosed"/>
  <field path="properties.W" ecs="x.y.z"/>
  <field path="properties.V" convert="lookup:missing"/>
  <widget/>
  <event-map>
    <event id="E" qid-name="E" severity="11" low-level-category="8052" ecs-category="proces"/>
  </event-map>
</dsm-mapping>
"#;
    let err = load(&[("b.xml", bad)]).expect_err("must fail");
    for needle in [
        "b.xml:1:25: <dsm-mapping>: unknown attribute `colour`",
        "b.xml:2:11: <select>: unknown source kind `nowhere`",
        "b.xml:3:15: <event-name>: bad path `properties..ActionType`",
        "b.xml:6:30: <field>: LEEF key `bad key`",
        "b.xml:6:55: <field>: unknown conversion `frobnicate`",
        "b.xml:7:30: <field>: LEEF key `cat` is written by the engine",
        "b.xml:8:30: <field>: bad regex: regex parse error: (unclosed error: unclosed group",
        "b.xml:9:30: <field>: `x.y.z` goes below a path that is a value elsewhere",
        "b.xml:10:30: <field>: no lookup table `missing`",
        "b.xml:11:3: <widget>: unknown element",
        "b.xml:13:32: <event>: severity is a whole number from 1 to 10",
        "b.xml:12:3: <event-map>: an <event-map> needs a <default>",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

#[test]
fn two_families_claiming_the_same_records_is_a_load_error() {
    let twin = GOOD.replace("family=\"a\"", "family=\"twin\"");
    let err = load(&[("a.xml", GOOD), ("twin.xml", &twin)]).expect_err("overlap");
    assert!(err.contains("twin.xml:1:1: <dsm-mapping>: family `twin` may claim the same records as family `a` (a.xml:1)"), "{err}");
    let other = GOOD
        .replace("family=\"a\"", "family=\"b\"")
        .replace("AdvancedHunting-A", "AdvancedHunting-B");
    load(&[("a.xml", GOOD), ("b.xml", &other)]).expect("disjoint families load");
}

#[test]
fn malformed_xml_is_located() {
    let err = load(&[(
        "m.xml",
        "<dsm-mapping family=\"m\">\n  <select>\n</dsm-mapping>\n",
    )])
    .expect_err("malformed");
    assert!(err.contains("m.xml:3:"), "{err}");
}

#[test]
fn include_of_a_missing_set_and_duplicate_unconditional_leef_keys() {
    let bad = GOOD.replace(
        r#"<field path="properties.X" leef="X" ecs="x.y"/>"#,
        "<include set=\"nope\"/>\n  <field path=\"properties.X\" leef=\"X\"/>\n  <field path=\"properties.Y\" leef=\"X\"/>",
    );
    let err = load(&[("c.xml", &bad)]).expect_err("fails");
    assert!(
        err.contains("c.xml:6:3: <include>: no <field-set id=\"nope\">"),
        "{err}"
    );
    assert!(
        err.contains("c.xml:8:30: <field>: LEEF key `X` is already written at line 7"),
        "{err}"
    );
}

const FALLBACK: &str = r#"<dsm-mapping family="any-streaming">
  <select source="eventhub" fallback="true"/>
  <event-name path="properties.ActionType|category"/>
  <event-category value="AdvancedHunting"/>
  <device-time path="properties.Timestamp|time"/>
  <event-map><default qid-name="Defender event" severity="3" low-level-category="8052"/></event-map>
</dsm-mapping>
"#;

#[test]
fn a_fallback_family_takes_what_no_specific_family_claims() {
    use defender_dsm::json::Json;
    use defender_dsm::mapping::scratch::Scratch;
    let set = load(&[("a.xml", GOOD), ("fallback.xml", FALLBACK)])
        .expect("a specific family and a fallback coexist");
    let pick = |text: &str| {
        let rec = Json::parse(text).expect("json");
        set.select(
            defender_dsm::event::SourceKind::EventHub,
            &rec,
            &mut Scratch::default(),
        )
        .map(|f| f.name.clone())
    };
    assert_eq!(
        pick(r#"{"category":"AdvancedHunting-A","properties":{}}"#).as_deref(),
        Some("a")
    );
    assert_eq!(
        pick(r#"{"category":"AdvancedHunting-Future","properties":{}}"#).as_deref(),
        Some("any-streaming")
    );

    let second = FALLBACK.replace("any-streaming", "second-fallback");
    let err =
        load(&[("fallback.xml", FALLBACK), ("second.xml", &second)]).expect_err("two fallbacks");
    assert!(
        err.contains(
            "family `second-fallback` is a fallback for the same source as family `any-streaming`"
        ),
        "{err}"
    );
}

#[test]
fn a_category_that_varies_is_refused() {
    let bad = FALLBACK.replace(
        r#"<event-category value="AdvancedHunting"/>"#,
        r#"<event-category path="category"/>"#,
    );
    let err = load(&[("v.xml", &bad)]).expect_err("a varying category");
    assert!(
        err.contains("v.xml:4:3: <event-category>: <event-category> takes a fixed value"),
        "{err}"
    );
}
