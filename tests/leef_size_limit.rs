//! An event over an output's maximum message size: the longest values give way first, keys and
//! the QID keys are never cut, the event says what was cut, and the result is deterministic.

use std::sync::Arc;

use defender_dsm::decode::decode_text;
use defender_dsm::format::{render_leef, render_leef_within, Fit, RenderOptions};
use defender_dsm::mapping::scratch::Scratch;
use defender_dsm::mapping::{MapOptions, MappingSet};

const RECORD: &str = r#"{"category":"AdvancedHunting-DeviceProcessEvents","tenantId":"t1","properties":{
  "Timestamp":"2026-10-14T08:31:02Z","ActionType":"ProcessCreated","DeviceName":"ws-01.example",
  "AccountName":"bob","FileName":"powershell.exe",
  "ProcessCommandLine":"powershell.exe -enc @LONG@\tTAB\\BACKSLASH é",
  "InitiatingProcessCommandLine":"cmd.exe /c start MEDIUMMEDIUMMEDIUMMEDIUMMEDIUMMEDIUMMEDIUMMEDIUMMEDIUMMEDIUM"}}"#;

/// A 4 KB encoded PowerShell command line: the kind of value that overflows a syslog frame.
fn record() -> String {
    RECORD.replace("@LONG@", &"SQBFAFgA".repeat(512))
}

fn keys(line: &str) -> Vec<String> {
    let attrs = line.splitn(7, '|').nth(6).expect("attributes");
    attrs
        .split('\t')
        .filter_map(|a| a.split_once('=').map(|(k, _)| k.to_string()))
        .collect()
}

#[test]
fn oversized_events_lose_their_longest_values_first() {
    let set = MappingSet::embedded().expect("mappings");
    let opts = RenderOptions::default();
    let origin: Arc<str> = Arc::from("t");
    let mut checked = 0;
    let text = record();
    decode_text(&text, &origin, None, |rec| {
        let ev = set.map(&rec, &MapOptions::default(), &mut Scratch::default());
        let mut whole = Vec::new();
        render_leef(&ev, &opts, &mut whole);
        let whole = String::from_utf8(whole).expect("utf-8");

        let mut out = Vec::new();
        assert_eq!(
            render_leef_within(&ev, &opts, whole.len(), &mut out),
            Fit::Whole
        );
        assert_eq!(String::from_utf8_lossy(&out), whole);

        for max in [whole.len() - 1, 2048, 700] {
            let mut out = Vec::new();
            let fit = render_leef_within(&ev, &opts, max, &mut out);
            let line = String::from_utf8(out.clone()).expect("cut on character boundaries");
            assert!(out.len() <= max, "{} > {max}", out.len());
            let Fit::Trimmed(cut) = fit else {
                panic!("expected a trimmed event at {max}, got {fit:?}")
            };
            assert!(cut.contains(&"ProcessCommandLine".to_string()), "{cut:?}");
            // Same header and QID keys; every key once; the marker names what was cut.
            let head_end = whole.find("\tdevTime=").expect("devTime");
            assert_eq!(&line[..head_end], &whole[..head_end]);
            let mut expected = keys(&whole);
            let id = expected.pop().expect("dsmId comes last");
            expected.push("truncated".to_string());
            expected.push(id);
            assert_eq!(keys(&line), expected);
            assert!(line.contains(&format!("\ttruncated={}\tdsmId=", cut.join(","))));
            assert!(!line.contains('\n') && !line.contains('\r'));
            // Deterministic.
            let mut again = Vec::new();
            render_leef_within(&ev, &opts, max, &mut again);
            assert_eq!(again, out);
            checked += 1;
        }
        // The short values survive a cut whole; only the long command line gave way.
        let mut out = Vec::new();
        let fit = render_leef_within(&ev, &opts, 2048, &mut out);
        assert_eq!(fit, Fit::Trimmed(vec!["ProcessCommandLine".to_string()]));
        let line = String::from_utf8_lossy(&out);
        assert!(
            line.contains("\tusrName=bob\t") && line.contains("start MEDIUM"),
            "{line}"
        );

        let mut out = Vec::new();
        assert_eq!(render_leef_within(&ev, &opts, 60, &mut out), Fit::TooLarge);
        assert!(
            out.is_empty(),
            "nothing is written for an event that cannot fit"
        );
    })
    .expect("decodes");
    assert_eq!(checked, 3);
}
