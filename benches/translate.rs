//! Translate throughput against a bare `serde_json::Value` parse of the same records.
//!
//! Two corpora of 60,000 records built from the mapped records of `fixtures/` (all 13 families,
//! with long command lines, JSON-in-string AdditionalFields and Graph evidence lists), one compact
//! JSON record per line: a realistic mix weighted by family volume, and a uniform cycle over every
//! fixture record. Each measurement is the median of 7 rounds on one thread. Two breakdown rows
//! (decode alone; decode and map without rendering) show where the time goes.
//! Run: `cargo bench --bench translate` (release profile with thin LTO).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use defender_dsm::cli::replay::find_cases;
use defender_dsm::decode::decode_text;
use defender_dsm::mapping::scratch::Scratch;
use defender_dsm::mapping::{MapOptions, MappingSet};
use defender_dsm::translate::{Counts, Format, Translator};

mod common;
use common::setting;

/// Share of each family in a tenant's Defender volume (Streaming API events dominate; alerts
/// are rare). Our own estimate for an endpoint-heavy tenant, stated here so it can be argued with.
const REALISTIC_MIX: &[(&str, usize)] = &[
    ("device-network-events", 30),
    ("device-process-events", 14),
    ("device-file-events", 14),
    ("device-image-load-events", 14),
    ("device-registry-events", 10),
    ("device-events", 8),
    ("device-logon-events", 4),
    ("device-info", 1),
    ("device-network-info", 1),
    ("device-file-certificate-info", 1),
    ("alert-info", 1),
    ("alert-evidence", 1),
    ("graph-alert", 1),
];

/// Mapped fixture records by family directory, each as one compact JSON line.
fn records_by_family() -> Vec<(String, Vec<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for case in find_cases(&root.join("fixtures")).expect("fixtures") {
        let family = case
            .parent()
            .and_then(Path::file_name)
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if family == "unmapped" {
            continue;
        }
        let text = std::fs::read_to_string(&case).expect("fixture");
        let mut lines = Vec::new();
        decode_text(&text, &Arc::from("bench"), None, |r| {
            lines.push(r.payload.to_string())
        })
        .expect("decodes");
        match out.iter_mut().find(|(f, _)| *f == family) {
            Some((_, l)) => l.extend(lines),
            None => out.push((family, lines)),
        }
    }
    out
}

/// `uniform`: every fixture record in turn. `realistic`: families drawn by `REALISTIC_MIX`.
fn corpus(realistic: bool) -> Vec<String> {
    let families = records_by_family();
    let n = setting("BENCH_RECORDS", 60_000);
    if !realistic {
        let all: Vec<String> = families.into_iter().flat_map(|(_, l)| l).collect();
        return all.iter().cycle().take(n).cloned().collect();
    }
    let mut wheel: Vec<&String> = Vec::new();
    // BENCH_FAMILY=<fixture directory>: that family's records alone, e.g. to profile one table.
    let only_family = std::env::var("BENCH_FAMILY").unwrap_or_default();
    for (family, weight) in REALISTIC_MIX
        .iter()
        .filter(|(f, _)| only_family.is_empty() || *f == only_family)
    {
        let lines = &families
            .iter()
            .find(|(f, _)| f == family)
            .expect("family has fixtures")
            .1;
        for i in 0..*weight {
            wheel.push(&lines[i % lines.len()]);
        }
    }
    // BENCH_PUBLIC_IPS=1: the fixtures' documentation addresses (198.51.100.0/24,
    // 203.0.113.0/24) become addresses of 175.16.199.0/24, which MaxMind's test City database
    // knows (Changchun), so lookups really happen and find something.
    let public = std::env::var("BENCH_PUBLIC_IPS").is_ok_and(|v| v == "1");
    wheel
        .iter()
        .cycle()
        .take(n)
        .map(|s| {
            if public {
                s.replace("198.51.100.", "175.16.199.")
                    .replace("203.0.113.", "175.16.199.")
            } else {
                (*s).clone()
            }
        })
        .collect()
}

/// Median seconds of `f` over the rounds.
fn measure(mut f: impl FnMut()) -> f64 {
    let rounds = setting("BENCH_ROUNDS", 7).max(1);
    let mut times: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[rounds / 2]
}

fn main() {
    // BENCH_GEOIP=<City .mmdb> turns enrichment on (the addresses the mappings mark).
    let geo = std::env::var("BENCH_GEOIP").ok().map(|p| {
        let bytes = std::fs::read(&p).expect("GeoIP database");
        std::sync::Arc::new(
            defender_dsm::mapping::geo::GeoDb::from_bytes(Some(bytes), None).expect("mmdb"),
        )
    });
    let translator = Translator::new(
        MappingSet::embedded().expect("mappings"),
        MapOptions {
            geo,
            ..MapOptions::default()
        },
        Default::default(),
    );
    // BENCH_CORPUS=realistic (or uniform) runs that corpus alone, e.g. for instruction counts.
    let only = std::env::var("BENCH_CORPUS").unwrap_or_default();
    for (name, realistic) in [("realistic mix", true), ("uniform over fixtures", false)] {
        if name.contains(only.as_str()) {
            run(name, &corpus(realistic), &translator);
        }
    }
}

fn run(corpus_name: &str, lines: &[String], translator: &Translator) {
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let origin: Arc<str> = Arc::from("bench");
    println!(
        "\ncorpus ({corpus_name}): {} records, {:.1} MB, {:.0} bytes/record",
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

    // BENCH_PATH=both runs the LEEF + ECS path alone (after the reference), for profiles.
    let only_both = std::env::var("BENCH_PATH").is_ok_and(|v| v == "both");
    let parse = measure(|| {
        for l in lines {
            black_box(serde_json::from_str::<serde_json::Value>(black_box(l)).expect("valid"));
        }
    });
    report("serde_json::Value parse (reference)", parse, None);

    if !only_both {
        let decode = measure(|| {
            for l in lines {
                decode_text(black_box(l), &origin, None, |r| {
                    black_box(&r);
                })
                .expect("decodes");
            }
        });
        report("  breakdown: decode alone", decode, Some(parse));
    }

    for (name, formats) in [
        (
            "translate: decode+map+LEEF+ECS",
            &[Format::Leef, Format::Ecs][..],
        ),
        ("translate: decode+map+LEEF", &[Format::Leef][..]),
        ("translate: decode+map+ECS", &[Format::Ecs][..]),
        ("  breakdown: decode+map, no rendering", &[][..]),
    ] {
        if only_both && formats.len() != 2 {
            continue;
        }
        let mut out = Vec::with_capacity(1 << 20);
        let mut counts = Counts::default();
        let mut cache = Scratch::default();
        let secs = measure(|| {
            for l in lines {
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
