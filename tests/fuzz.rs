//! Fuzzing decode -> map -> render, and the HTTP body path, with hostile variations of every
//! golden fixture (proptest: each failure is shrunk to a small reproducer and kept in
//! `tests/fuzz.proptest-regressions`). Every record, whatever its columns are called or hold,
//! must translate without a panic into:
//! - LEEF with unique, non-empty keys and no raw CR or LF (tabs only as delimiters);
//! - ECS that is JSON without a repeated member name at any depth.
//!
//! Cases: `DSM_FUZZ_CASES` (default 2,000 for the translation, a tenth of it for HTTP, some
//! seconds, as part of `cargo test`); CI runs 30,000 as a step of its own, a few minutes on two
//! cores.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;

use defender_dsm::format::{render_ecs, render_leef, RenderOptions};
use defender_dsm::mapping::{MapOptions, MappingSet};
use defender_dsm::translate::{Counts, Translator};

mod common;

/// A JSON value that may repeat member names (serde_json's `Value` cannot).
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn from_value(v: &serde_json::Value) -> J {
        match v {
            serde_json::Value::Null => J::Null,
            serde_json::Value::Bool(b) => J::Bool(*b),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map_or(J::Float(n.as_f64().unwrap_or(0.0)), J::Int),
            serde_json::Value::String(s) => J::Str(s.clone()),
            serde_json::Value::Array(a) => J::Arr(a.iter().map(J::from_value).collect()),
            serde_json::Value::Object(o) => J::Obj(
                o.iter()
                    .map(|(k, v)| (k.clone(), J::from_value(v)))
                    .collect(),
            ),
        }
    }

    fn write(&self, out: &mut String) {
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Int(i) => out.push_str(&i.to_string()),
            J::Float(f) if f.is_finite() => out.push_str(&format!("{f:?}")),
            J::Float(_) => out.push('0'),
            J::Str(s) => out.push_str(&quoted(s)),
            J::Arr(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    x.write(out);
                }
                out.push(']');
            }
            J::Obj(o) => {
                out.push('{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&quoted(k));
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    /// Nodes in pre-order.
    fn count(&self) -> usize {
        1 + match self {
            J::Arr(a) => a.iter().map(J::count).sum(),
            J::Obj(o) => o.iter().map(|(_, v)| v.count()).sum(),
            _ => 0,
        }
    }

    /// The `n`th node in pre-order.
    fn nth(&mut self, n: usize) -> Option<&mut J> {
        if n == 0 {
            return Some(self);
        }
        let mut n = n - 1;
        let children: Vec<&mut J> = match self {
            J::Arr(a) => a.iter_mut().collect(),
            J::Obj(o) => o.iter_mut().map(|(_, v)| v).collect(),
            _ => return None,
        };
        for c in children {
            let size = c.count();
            if n < size {
                return c.nth(n);
            }
            n -= size;
        }
        None
    }
}

/// Member names meant to collide with LEEF's predefined keys, our own, each other after
/// snake-casing, or Elasticsearch's rules.
fn hostile_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "cat",
            "devTime",
            "devTimeFormat",
            "dsmId",
            "sev",
            "src",
            "dst",
            "usrName",
            "proto",
            "EventName",
            "truncated",
            "",
            " ",
            ".",
            "a.b",
            "..",
            "accountName",
            "account_name",
            "AccountName",
            "Timestamp",
            "ActionType",
            "ReportId",
            "@timestamp",
            "x\ty",
            "x\ny",
            "k=v",
            "é",
            "__UDI_x",
        ])
        .prop_map(str::to_string),
        "[A-Za-z_][A-Za-z0-9_]{0,10}",
        "\\PC{0,6}",
        any::<String>(),
    ]
}

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\t\\r\\n\\\\=|\"\\x00-\\x1f\\x7f ]{0,12}",
        Just("2026-10-14T08:31:02Z".to_string()),
        Just("not a time".to_string()),
        Just("{\"a\":1,\"a\":2,\"A\":3}".to_string()),
        Just("[1,2".to_string()),
        Just("x".repeat(70_000)),
        "[0-9a-f.:]{1,20}",
    ]
}

fn value() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::Int),
        any::<f64>().prop_map(J::Float),
        hostile_text().prop_map(J::Str),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
            prop::collection::vec((hostile_key(), inner), 0..6).prop_map(J::Obj),
        ]
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, J),
    Insert(usize, String, J),
    Repeat(usize, usize, J),
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), value()).prop_map(|(n, v)| Mutation::Replace(n, v)),
        (any::<usize>(), hostile_key(), value()).prop_map(|(n, k, v)| Mutation::Insert(n, k, v)),
        (any::<usize>(), any::<usize>(), value()).prop_map(|(n, m, v)| Mutation::Repeat(n, m, v)),
        (any::<usize>(), any::<usize>()).prop_map(|(n, m)| Mutation::Remove(n, m)),
    ]
}

fn apply(doc: &mut J, m: &Mutation) {
    let count = doc.count();
    // Objects are where names are: insertions aim at the n-th object.
    let nth_object = |doc: &mut J, n: usize| -> Option<usize> {
        let objects: Vec<usize> = (0..count)
            .filter(|&i| matches!(doc.nth(i), Some(J::Obj(_))))
            .collect();
        (!objects.is_empty()).then(|| objects[n % objects.len()])
    };
    match m {
        Mutation::Replace(n, v) => {
            // Not the root: the payload's shape stays recognisable more often.
            if count > 1 {
                if let Some(node) = doc.nth(1 + n % (count - 1)) {
                    *node = v.clone();
                }
            }
        }
        Mutation::Insert(n, k, v) => {
            if let Some(i) = nth_object(doc, *n) {
                if let Some(J::Obj(o)) = doc.nth(i) {
                    o.push((k.clone(), v.clone()));
                }
            }
        }
        Mutation::Repeat(n, m, v) => {
            if let Some(i) = nth_object(doc, *n) {
                if let Some(J::Obj(o)) = doc.nth(i) {
                    if !o.is_empty() {
                        let k = o[m % o.len()].0.clone();
                        o.push((k, v.clone()));
                    }
                }
            }
        }
        Mutation::Remove(n, m) => {
            if let Some(i) = nth_object(doc, *n) {
                if let Some(J::Obj(o)) = doc.nth(i) {
                    if !o.is_empty() {
                        o.remove(m % o.len());
                    }
                }
            }
        }
    }
}

/// Every fixture input, parsed.
fn fixtures() -> &'static Vec<J> {
    static ALL: OnceLock<Vec<J>> = OnceLock::new();
    ALL.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut out = Vec::new();
        let mut dirs = vec![root];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).expect("fixtures").flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.to_string_lossy().ends_with(".input.json") {
                    let text = std::fs::read_to_string(&p).expect("fixture");
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                        out.push(J::from_value(&v));
                    }
                }
            }
        }
        assert!(out.len() > 30, "the fixtures are the seeds");
        out
    })
}

fn translator() -> &'static Translator {
    static T: OnceLock<Translator> = OnceLock::new();
    T.get_or_init(|| {
        Translator::new(
            MappingSet::embedded().expect("mappings"),
            MapOptions::default(),
            RenderOptions::default(),
        )
    })
}

/// LEEF with unique non-empty keys and no raw CR or LF; `Err` says what is wrong.
fn check_leef(line: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    if text.contains('\r') || text.contains('\n') {
        return Err(format!("a raw CR or LF: {text:?}"));
    }
    let (_, attrs) = text
        .split_once("|x09|")
        .ok_or_else(|| format!("no LEEF 2.0 header with a tab delimiter: {text:?}"))?;
    let mut keys = HashSet::new();
    for attr in attrs.split('\t') {
        let (k, _) = attr
            .split_once('=')
            .ok_or_else(|| format!("an attribute without `=`: {attr:?} in {text:?}"))?;
        if k.is_empty() {
            return Err(format!("an empty key in {text:?}"));
        }
        if !keys.insert(k) {
            return Err(format!("the key {k:?} twice in {text:?}"));
        }
    }
    Ok(())
}

/// JSON without a repeated member name at any depth.
struct Unique;

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Unique;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_unit<E>(self) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Unique, A::Error> {
                while a.next_element::<Unique>()?.is_some() {}
                Ok(Unique)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Unique, A::Error> {
                let mut seen = HashSet::new();
                while let Some(k) = a.next_key::<String>()? {
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!("the member {k:?} twice")));
                    }
                    a.next_value::<Unique>()?;
                }
                Ok(Unique)
            }
        }
        d.deserialize_any(V)
    }
}

fn check_ecs(doc: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<Unique>(doc)
        .map(|_| ())
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(doc)))
}

/// Translates `text` and checks every event.
fn translate_and_check(text: &str) -> Result<usize, String> {
    let t = translator();
    let origin: Arc<str> = Arc::from("fuzz");
    let mut counts = Counts::default();
    let mut problems = Vec::new();
    let mut events = 0;
    let _ = t.each_event(text, &origin, None, &mut counts, |_, ev| {
        events += 1;
        let (mut leef, mut ecs) = (Vec::new(), Vec::new());
        render_leef(ev, &t.render, &mut leef);
        render_ecs(ev, &mut ecs);
        if let Err(e) = check_leef(&leef).and_then(|()| check_ecs(&ecs)) {
            problems.push(e);
        }
    });
    match problems.into_iter().next() {
        Some(p) => Err(p),
        None => Ok(events),
    }
}

fn cases() -> u32 {
    std::env::var("DSM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn hostile_payload() -> impl Strategy<Value = String> {
    (
        any::<prop::sample::Index>(),
        prop::collection::vec(mutation(), 1..8),
    )
        .prop_map(|(which, mutations)| {
            let seeds = fixtures();
            let mut doc = which.get(seeds).clone();
            for m in &mutations {
                apply(&mut doc, m);
            }
            let mut text = String::new();
            doc.write(&mut text);
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_variation_of_a_fixture_translates_into_valid_leef_and_ecs(text in hostile_payload()) {
        translate_and_check(&text).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn any_text_at_all_is_refused_or_translated_without_a_panic(text in any::<String>()) {
        translate_and_check(&text).map_err(TestCaseError::fail)?;
    }
}

/// The regressions of the hostile inputs found by hand, kept as they were reported.
#[test]
fn the_reported_hostile_records_translate_into_valid_output() {
    for text in [
        // Carried columns named like reserved LEEF keys, and an empty name.
        r#"{"records":[{"time":"2026-10-14T16:05:00Z","category":"AdvancedHunting-NewTable","properties":{"cat":"Spoofed","devTime":"1","dsmId":"0","":"x","sev":"10","Timestamp":"2026-10-14T16:05:00Z"}}]}"#,
        // Evidence whose names meet after snake-casing, and repeated names in nested JSON.
        r##"{"value":[{"id":"a1","@odata.type":"#microsoft.graph.security.alert","createdDateTime":"2026-10-14T08:31:02Z","evidence":[{"accountName":"a","account_name":"b","userAccount":{"x":1,"x":2}}]}]}"##,
    ] {
        let n = translate_and_check(text).expect("valid");
        assert!(n > 0, "{text}");
    }
}

/// The HTTP body path of a running `serve`: whatever the body (bytes, gzip or not, with a
/// BOM), the answer is a 2xx or 4xx with a reason, and the service stays up.
#[test]
fn any_body_gets_an_answer_and_the_service_stays_up() {
    let mut s = common::ServeProcess::new("fuzz-http", "");
    s.spawn();
    let port = s.port;
    let config = ProptestConfig {
        cases: (cases() / 10).max(10),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let bodies = (
        prop_oneof![
            hostile_payload().prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..2000),
            hostile_payload().prop_map(|t| {
                let mut b = vec![0xef, 0xbb, 0xbf];
                b.extend(t.into_bytes());
                b
            }),
        ],
        any::<bool>(),
    );
    let result = proptest::test_runner::TestRunner::new(config).run(&bodies, |(body, gzip)| {
        let url = format!("http://127.0.0.1:{port}/v1/ingest");
        let (body, headers): (Vec<u8>, Vec<(&str, &str)>) = if gzip {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&body).expect("gzip");
            (
                gz.finish().expect("gzip"),
                vec![("content-encoding", "gzip")],
            )
        } else {
            (body, Vec::new())
        };
        let r = common::request("POST", &url, &headers, body, None).map_err(TestCaseError::fail)?;
        prop_assert!(
            r.status == 202 || (400..500).contains(&r.status),
            "{} {}",
            r.status,
            r.body
        );
        if r.status != 202 {
            prop_assert!(r.body.contains("\"error\""), "{}", r.body);
        }
        let health = common::request(
            "GET",
            &format!("http://127.0.0.1:{port}/healthz"),
            &[],
            Vec::new(),
            None,
        )
        .map_err(TestCaseError::fail)?;
        prop_assert_eq!(health.status, 200);
        Ok(())
    });
    s.stop();
    if let Err(e) = result {
        panic!("{e}\n{}", s.log());
    }
}

#[test]
fn the_checks_catch_what_they_look_for() {
    let head = "<13>Oct 14 16:05:00 h LEEF:2.0|Microsoft|Defender XDR|1.0|X|x09|";
    assert!(check_leef(format!("{head}cat=a\tsev=1").as_bytes()).is_ok());
    for bad in ["cat=a\tcat=b", "cat=a\t=b", "cat=a\nb=c", "cat=a\rb", "cat"] {
        assert!(
            check_leef(format!("{head}{bad}").as_bytes()).is_err(),
            "{bad:?}"
        );
    }
    assert!(check_ecs(br#"{"a":{"b":[{"c":1,"d":2}]}}"#).is_ok());
    for bad in [&br#"{"a":1,"a":2}"#[..], br#"{"x":[{"c":1,"c":1}]}"#, b"{"] {
        assert!(check_ecs(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}
