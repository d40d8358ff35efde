//! Input from outside the process never panics the translator: every leaf of every fixture record
//! is replaced in turn by each awkward JSON value, and fixture texts are cut at many points.
//! Every record still produces one LEEF line and one ECS document (mapped or generic).

use std::path::Path;
use std::sync::Arc;

use defender_dsm::cli::replay::find_cases;
use defender_dsm::mapping::{MapOptions, MappingSet};
use defender_dsm::translate::{Counts, Format, Translator};
use serde_json::{json, Value};

fn translator() -> Translator {
    Translator::new(
        MappingSet::embedded().expect("mappings"),
        MapOptions::default(),
        Default::default(),
    )
}

fn awkward() -> Vec<Value> {
    vec![
        Value::Null,
        json!(""),
        json!("-"),
        json!(0),
        json!(-1),
        json!(18446744073709551615u64),
        json!(1e308),
        json!(-0.5),
        json!(true),
        json!("not a time or an ip"),
        json!("2026-13-45T99:99:99Z"),
        json!("{\"truncated\": "),
        json!("[\"a\", 1, null, {\"b\": []}]"),
        json!([]),
        json!([1, "x", null, {"k": "v"}]),
        json!({}),
        json!({"nested": {"deeper": [1, 2, {"x": "y"}]}}),
        json!("tab\there\r\nnewline\u{0}nul\u{7f}del|pipe^caret=eq\\back\"quote"),
        json!("é✓ unicode and a very long value ".repeat(200)),
    ]
}

/// Paths to every leaf (and every container) of a JSON value.
fn paths(v: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(o) => o
            .iter()
            .for_each(|(k, x)| paths(x, [prefix.clone(), vec![k.clone()]].concat(), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| paths(x, [prefix.clone(), vec![i.to_string()]].concat(), out)),
        _ => {}
    }
}

fn replace(v: &mut Value, path: &[String], with: &Value) {
    match path.split_first() {
        None => *v = with.clone(),
        Some((k, rest)) => {
            let next = match v {
                Value::Object(o) => o.get_mut(k),
                Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            };
            if let Some(n) = next {
                replace(n, rest, with);
            }
        }
    }
}

fn fixture_records() -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for case in find_cases(&root.join("fixtures")).expect("fixtures") {
        let text = std::fs::read_to_string(&case).expect("fixture");
        for line in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
            match line.expect("fixtures are valid JSON") {
                Value::Object(mut o) if o.contains_key("records") || o.contains_key("value") => {
                    let items = o.remove("records").or_else(|| o.remove("value"));
                    out.extend(
                        items
                            .and_then(|v| v.as_array().cloned())
                            .unwrap_or_default(),
                    );
                }
                other => out.push(other),
            }
        }
    }
    out
}

#[test]
fn every_leaf_replaced_by_every_awkward_value_still_translates() {
    let t = translator();
    let origin: Arc<str> = Arc::from("mutated");
    let mut runs = 0;
    for record in fixture_records() {
        let mut all = Vec::new();
        paths(&record, Vec::new(), &mut all);
        for path in all.iter().filter(|p| !p.is_empty()) {
            for value in awkward() {
                let mut mutated = record.clone();
                replace(&mut mutated, path, &value);
                let text = mutated.to_string();
                let mut out = Vec::new();
                let mut counts = Counts::default();
                t.text(
                    &text,
                    &origin,
                    None,
                    &[Format::Leef, Format::Ecs],
                    &mut out,
                    &mut counts,
                )
                .expect("valid JSON decodes");
                let out = String::from_utf8(out).expect("output is UTF-8");
                // An incident with alerts or an alert with evidence fans out into one record
                // per item; each record gives one LEEF line and one ECS document.
                let n = counts.total();
                assert!(n >= 1, "{path:?} = {value}: no record");
                let lines: Vec<&str> = out.lines().collect();
                assert_eq!(
                    lines.len() as u64,
                    2 * n,
                    "{path:?} = {value}: one LEEF line and one ECS document per record"
                );
                for ecs in lines.iter().skip(1).step_by(2) {
                    serde_json::from_str::<Value>(ecs).unwrap_or_else(|e| {
                        panic!("{path:?} = {value}: ECS is not JSON ({e}): {ecs}")
                    });
                }
                runs += 1;
            }
        }
    }
    assert!(runs > 10_000, "only {runs} mutations");
}

#[test]
fn truncated_and_garbled_inputs_fail_cleanly_or_translate() {
    let t = translator();
    let origin: Arc<str> = Arc::from("cut");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for case in find_cases(&root.join("fixtures")).expect("fixtures") {
        let text = std::fs::read_to_string(&case).expect("fixture");
        let cuts: Vec<usize> = (0..text.len())
            .step_by(7)
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for cut in cuts {
            for garbled in [
                text[..cut].to_string(),
                format!("{}}}{}", &text[..cut], &text[cut..]),
            ] {
                let mut out = Vec::new();
                let mut counts = Counts::default();
                let result = t.text(
                    &garbled,
                    &origin,
                    None,
                    &[Format::Leef, Format::Ecs],
                    &mut out,
                    &mut counts,
                );
                if let Err(e) = result {
                    assert!(
                        e.to_string().starts_with("cut:"),
                        "errors name the input: {e}"
                    );
                }
                assert_eq!(
                    String::from_utf8(out).expect("UTF-8").lines().count() as u64,
                    2 * counts.total()
                );
            }
        }
    }
}
