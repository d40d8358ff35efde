//! Translate throughput against a bare `serde_json::Value` parse of the same records.
//!
//! Corpus: every mapped record of `fixtures/` (all 13 families, with long command lines,
//! JSON-in-string AdditionalFields and Graph evidence lists), one compact JSON record per line,
//! repeated to 60,000 records. Each measurement takes the median of 7 rounds on one thread.
//! Run: `cargo bench --bench translate` (release profile with thin LTO).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use defender_dsm::cli::replay::find_cases;
use defender_dsm::decode::decode_text;
use defender_dsm::mapping::path::JsonCache;
use defender_dsm::mapping::{MapOptions, MappingSet};
use defender_dsm::translate::{Counts, Format, Translator};

const RECORDS: usize = 60_000;
const ROUNDS: usize = 7;

fn corpus() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut lines = Vec::new();
    for case in find_cases(&root.join("fixtures")).expect("fixtures") {
        if case.to_string_lossy().contains("unmapped") {
            continue;
        }
        let text = std::fs::read_to_string(&case).expect("fixture");
        decode_text(&text, &Arc::from("bench"), None, |r| {
            lines.push(r.payload.to_string())
        })
        .expect("decodes");
    }
    lines.iter().cycle().take(RECORDS).cloned().collect()
}

/// Median seconds of `f` over the rounds.
fn measure(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[ROUNDS / 2]
}

fn main() {
    let lines = corpus();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let translator = Translator::new(
        MappingSet::embedded().expect("mappings"),
        MapOptions::default(),
        Default::default(),
    );
    let origin: Arc<str> = Arc::from("bench");
    println!(
        "corpus: {} records, {:.1} MB, {:.0} bytes/record",
        lines.len(),
        bytes as f64 / 1e6,
        bytes as f64 / lines.len() as f64
    );

    let report = |name: &str, secs: f64, reference: Option<f64>| {
        let rps = lines.len() as f64 / secs;
        let mbps = bytes as f64 / secs / 1e6;
        let ratio = reference
            .map(|r| format!("  ({:.2}x the parse-only time)", secs / r))
            .unwrap_or_default();
        println!("{name:<40} {rps:>10.0} records/s {mbps:>8.1} MB/s{ratio}");
    };

    let parse = measure(|| {
        for l in &lines {
            black_box(serde_json::from_str::<serde_json::Value>(black_box(l)).expect("valid"));
        }
    });
    report("serde_json::Value parse (reference)", parse, None);

    for (name, formats) in [
        (
            "translate: decode+map+LEEF+ECS",
            &[Format::Leef, Format::Ecs][..],
        ),
        ("translate: decode+map+LEEF", &[Format::Leef][..]),
        ("translate: decode+map+ECS", &[Format::Ecs][..]),
    ] {
        let mut out = Vec::with_capacity(1 << 20);
        let mut counts = Counts::default();
        let mut cache = JsonCache::default();
        let secs = measure(|| {
            for l in &lines {
                decode_text(black_box(l), &origin, None, |r| {
                    translator.record(&r, formats, &mut cache, &mut out, &mut counts)
                })
                .expect("decodes");
                black_box(&out);
                out.clear();
            }
        });
        assert_eq!(counts.unmapped + counts.failed, 0, "the corpus maps fully");
        report(name, secs, Some(parse));
    }
}
