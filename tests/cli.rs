//! The CLI contract of architecture.md, exercised on the real binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_defender-dsm"))
}

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    // A command that fails on its arguments exits without reading stdin: the pipe may be
    // closed before the write, which is no error of the command.
    if let Err(e) = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
    {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    child.wait_with_output().expect("binary finishes")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The staged samples in ../shared (CI has them beside the checkout).
fn samples() -> Option<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/samples/microsoft");
    if !dir.is_dir() {
        eprintln!(
            "note: {} is absent; sample translation not exercised",
            dir.display()
        );
        return None;
    }
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readable").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json" || x == "ndjson") {
                out.push(p);
            }
        }
    }
    out.sort();
    Some(out)
}

#[test]
fn every_shared_sample_translates_to_valid_leef_and_ecs() {
    let Some(files) = samples() else { return };
    assert!(files.len() > 10);
    for f in &files {
        let path = f.to_string_lossy().to_string();
        let leef = run(&["translate", "--format", "leef", &path], "");
        assert!(leef.status.success(), "{path}: {}", text(&leef.stderr));
        let ecs = run(&["translate", "--format", "ecs", &path], "");
        assert!(ecs.status.success(), "{path}: {}", text(&ecs.stderr));
        let (l, e) = (text(&leef.stdout), text(&ecs.stdout));
        assert_eq!(
            l.lines().count(),
            e.lines().count(),
            "{path}: one LEEF line and one ECS document per record"
        );
        assert!(l.lines().count() > 0, "{path}: no output");
        for line in l.lines() {
            assert!(
                line.starts_with('<') && line.contains(" LEEF:2.0|Microsoft|"),
                "{path}: {line}"
            );
        }
        for line in e.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|err| panic!("{path}: {err}"));
            assert!(v.is_object());
        }
        let summary = text(&ecs.stderr);
        let records: usize = summary
            .split("translate: ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{path}: no summary in {summary}"));
        assert_eq!(
            records,
            e.lines().count(),
            "{path}: summary counts every record"
        );
    }
}

#[test]
fn malformed_input_exits_2_naming_file_and_line_and_keeps_what_came_before() {
    let dir = std::env::temp_dir().join(format!("dsm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let f = dir.join("bad.ndjson");
    std::fs::write(
        &f,
        "{\"category\":\"AdvancedHunting-DeviceInfo\",\"tenantId\":\"t\",\"properties\":{\"Timestamp\":\"2026-01-01T00:00:00Z\"}}\n{\"category\": oops}\n",
    )
    .expect("write");
    let out = run(&["translate", &f.to_string_lossy()], "");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:2:", f.display())), "{err}");
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "the good first line is still translated"
    );

    let missing = run(&["translate", "/nonexistent/file.json"], "");
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("/nonexistent/file.json"));

    let binary = run(&["translate", "-"], "\u{0}\u{ff}");
    assert_eq!(binary.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn source_override_and_render_options() {
    let record = r#"{"category":"AdvancedHunting-DeviceInfo","tenantId":"t","properties":{"Timestamp":"2026-01-02T03:04:05.678Z","DeviceName":"h1"}}"#;
    let auto = run(&["translate"], record);
    assert!(text(&auto.stdout).starts_with("<14>Jan  2 03:04:05 defender-dsm LEEF:2.0|Microsoft|Defender XDR|1.0|DeviceInfo|x09|cat=DeviceInfo\tdevTime=1767323045678\t"));

    let forced = run(&["translate", "--source", "graph-alert"], record);
    let forced_line = text(&forced.stdout);
    assert!(
        forced_line.contains("|Unmapped|x09|cat=Pipeline\t")
            && forced_line.contains("sourceCategory=AdvancedHunting-DeviceInfo")
            && forced_line.contains("inputKind=graph-alert"),
        "a record forced to another kind is unmapped, not dropped: {forced_line}"
    );
    assert!(text(&forced.stderr).contains("1 unmapped"));

    let v1 = run(
        &[
            "translate",
            "--leef-version",
            "1",
            "--syslog-header",
            "rfc5424",
            "--log-source-id",
            "m365d-contoso",
        ],
        record,
    );
    assert!(text(&v1.stdout).starts_with("<14>1 2026-01-02T03:04:05.678Z m365d-contoso defender-dsm - - - LEEF:1.0|Microsoft|Defender XDR|1.0|DeviceInfo|cat="));

    let caret = run(
        &[
            "translate",
            "--leef-delimiter",
            "^",
            "--syslog-header",
            "none",
        ],
        record,
    );
    assert!(text(&caret.stdout)
        .starts_with("LEEF:2.0|Microsoft|Defender XDR|1.0|DeviceInfo|^|cat=DeviceInfo^devTime="));

    let bad = run(&["translate", "--source", "nope"], record);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("unknown source kind `nope`"));
    let bad_host = run(&["translate", "--log-source-id", "two words"], record);
    assert!(!bad_host.status.success());
}

#[test]
fn ecs_original_only_when_asked() {
    let record = r#"{"category":"AdvancedHunting-DeviceInfo","tenantId":"t","properties":{"Timestamp":"2026-01-02T03:04:05Z"}}"#;
    let plain = text(&run(&["translate", "--format", "ecs"], record).stdout);
    assert!(!plain.contains("\"original\""));
    let with = text(&run(&["translate", "--format", "ecs", "--original"], record).stdout);
    let v: serde_json::Value = serde_json::from_str(with.trim()).expect("json");
    let original = v
        .pointer("/event/original")
        .and_then(|x| x.as_str())
        .expect("event.original");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(original).expect("json"),
        serde_json::from_str::<serde_json::Value>(record).expect("json")
    );
}

#[test]
fn vendor_duplicates_of_core_fields_only_on_request() {
    let record = r#"{"category":"AdvancedHunting-DeviceLogonEvents","tenantId":"t","properties":{"Timestamp":"2026-01-02T03:04:05Z","ActionType":"LogonFailed","AccountName":"a.chen","LogonType":"Network"}}"#;
    let doc = |args: &[&str]| -> serde_json::Value {
        let out = run(&[&["translate", "--format", "ecs"], args].concat(), record);
        serde_json::from_str(text(&out.stdout).trim()).expect("json")
    };
    let plain = doc(&[]);
    assert_eq!(
        plain.pointer("/user/name").and_then(|v| v.as_str()),
        Some("a.chen")
    );
    assert!(
        plain.pointer("/m365_defender/event/account/name").is_none(),
        "duplicate of user.name left out: {plain}"
    );
    assert_eq!(
        plain
            .pointer("/m365_defender/event/logon/type")
            .and_then(|v| v.as_str()),
        Some("Network"),
        "columns not mapped to core stay"
    );
    let kept = doc(&["--preserve-duplicate-custom-fields"]);
    assert_eq!(
        kept.pointer("/m365_defender/event/account/name")
            .and_then(|v| v.as_str()),
        Some("a.chen")
    );
}

#[test]
fn check_and_replay_pass_on_the_repository_and_fail_on_a_broken_mapping_dir() {
    let root = env!("CARGO_MANIFEST_DIR");
    let check = bin().current_dir(root).arg("check").output().expect("runs");
    assert!(check.status.success(), "{}", text(&check.stderr));
    let replay = bin()
        .current_dir(root)
        .arg("replay")
        .output()
        .expect("runs");
    assert!(replay.status.success(), "{}", text(&replay.stderr));

    let dir = std::env::temp_dir().join(format!("dsm-maps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("x.xml"),
        "<dsm-mapping family=\"x\">\n  <select/>\n</dsm-mapping>\n",
    )
    .expect("write");
    let broken = bin()
        .current_dir(root)
        .args(["check", "--mappings", &dir.to_string_lossy()])
        .output()
        .expect("runs");
    assert_eq!(broken.status.code(), Some(1));
    let err = text(&broken.stderr);
    assert!(
        err.contains("x.xml:2:3: <select>: a <select> needs at least one condition"),
        "{err}"
    );
    assert!(
        err.contains("x.xml:1:1: <dsm-mapping>: a family needs a <event-map>"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn coverage_names_unread_columns_keys_and_empty_fields() {
    let record = r#"{"category":"AdvancedHunting-DeviceLogonEvents","tenantId":"t","properties":{"Timestamp":"2026-01-02T03:04:05Z","ActionType":"LogonSuccess","DeviceName":"h1","AccountName":"bob","BrandNewColumn":"x","AdditionalFields":"{\"IsLocalLogon\":true,\"NewKey\":1}"}}"#;
    let out = run(&["coverage"], record);
    assert_eq!(out.status.code(), Some(0));
    let report = text(&out.stdout);
    assert!(
        report.contains("device-logon-events / LogonSuccess: 1 records"),
        "{report}"
    );
    assert!(
        report.contains("BrandNewColumn (1, not in the dictionary)"),
        "{report}"
    );
    assert!(
        report.contains("AdditionalFields keys no field reads: IsLocalLogon (1), NewKey (1)"),
        "{report}"
    );
    assert!(
        report.contains("always empty: mappings/device-logon-events.xml:"),
        "{report}"
    );
    assert!(
        !report.contains("properties.AccountName -> LEEF usrName"),
        "AccountName had a value: {report}"
    );

    let stray = run(&["coverage"], r#"{"hello":1}"#);
    assert!(text(&stray.stdout).contains("(unmapped) unknown: 1 records"));
}

#[test]
fn out_file_rotates_and_keeps_every_line_whole() {
    let dir = std::env::temp_dir().join(format!("dsm-cli-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/device-network-events/failed-listening-request.input.json");
    let input = input.to_str().expect("utf-8 path");
    let stdout = text(&run(&["translate", "--format", "ecs", input], "").stdout);
    let path = dir.join("ecs.ndjson");
    let out = run(
        &[
            "translate",
            "--format",
            "ecs",
            "--out-file",
            path.to_str().expect("utf-8"),
            "--rotate-bytes",
            "3000",
            "--keep-files",
            "10",
            input,
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let mut files: Vec<PathBuf> = (1..=10)
        .rev()
        .map(|n| dir.join(format!("ecs.ndjson.{n}")))
        .filter(|p| p.exists())
        .collect();
    files.push(path);
    assert!(files.len() >= 2, "rotated at least once");
    let joined: String = files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read"))
        .collect();
    assert_eq!(
        joined, stdout,
        "oldest file first, the lines are stdout's, none split"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_full_spool_blocks_by_default_or_drops_the_oldest_when_asked() {
    let dir = std::env::temp_dir().join(format!("dsm-cli-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A port nothing listens on: the receiver is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/device-network-events/failed-listening-request.input.json");
    let input = input.to_str().expect("utf-8 path");
    let target = format!("--syslog=tcp://127.0.0.1:{port}");
    let common = |policy: &str, sub: &str, max: u32| -> Vec<String> {
        vec![
            "translate".into(),
            target.clone(),
            format!("--data-dir={}", dir.join(sub).display()),
            format!("--spool-max-bytes={max}"),
            "--syslog-retries=0".into(),
            format!("--spool-full={policy}"),
            input.to_string(),
        ]
    };
    // Three events of about 1 KB each, in a spool that holds two.
    let args = common("drop-oldest", "a", 2500);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>(), "");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("1 dropped from a full spool") && err.contains("2 kept in the spool"),
        "{err}"
    );

    // A spool that holds the first input's three events but not the same again: the second
    // run is refused whole, and the first run's events stay.
    let args = common("block", "b", 5000);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>(), "");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>(), "");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is full (3 events waiting")
            && err.contains("endpoint is down")
            && err.contains("nothing of this batch was accepted"),
        "{err}"
    );
    assert!(err.contains("3 kept in the spool"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
