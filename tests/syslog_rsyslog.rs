//! LEEF over syslog to a real rsyslog (the QRadar stand-in) on loopback: UDP, TCP with LF and
//! with octet-counting framing, TLS with a CA made here, and an oversized event. Every LEEF line
//! `translate` prints must arrive intact, tabs included, one message per event.
//!
//! Needs `rsyslogd` (Debian `rsyslog` + `rsyslog-gnutls`) and `openssl`; `.ci/run` installs
//! them and runs these tests with `--ignored`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::rsyslog::{free_port, received, run, start_rsyslog, start_rsyslog_on};

const BIN: &str = env!("CARGO_BIN_EXE_defender-dsm");

/// What `translate` prints for `inputs`: the lines every receiver must get.
fn expected(inputs: &[&Path], extra: &[&str]) -> Vec<String> {
    let out = Command::new(BIN)
        .arg("translate")
        .args(extra)
        .args(inputs)
        .output()
        .expect("translate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_string)
        .collect()
}

fn send(args: &[String], inputs: &[&Path]) -> String {
    let out = Command::new(BIN)
        .arg("translate")
        .args(args)
        .args(inputs)
        .output()
        .expect("translate --syslog");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(
        out.stdout.is_empty(),
        "events go to the receiver, not stdout"
    );
    err
}

#[test]
#[ignore = "needs rsyslogd and openssl (.ci/run installs them and runs this with --ignored)"]
fn every_transport_delivers_every_leef_line_intact() {
    let r = start_rsyslog();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let inputs = [
        root.join("device-process-events/process-created.input.json"),
        root.join("identity-logon-events/kerberos-success-and-ntlm-failure.input.json"),
        root.join("graph-incident/expanded-alerts-page.input.json"),
        root.join("email-events/delivered-and-blocked.input.json"),
    ];
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let lines = expected(&inputs, &[]);
    assert!(lines.len() >= 7 && lines.iter().any(|l| l.contains('\t')));
    let ca = r.dir.join("ca.pem").display().to_string();
    let runs: Vec<Vec<String>> = vec![
        vec![format!("--syslog=udp://127.0.0.1:{}", r.udp)],
        vec![format!("--syslog=tcp://127.0.0.1:{}", r.tcp)],
        vec![
            format!("--syslog=tcp://127.0.0.1:{}", r.tcp),
            "--syslog-framing=octet-counting".into(),
        ],
        vec![
            format!("--syslog=tls://127.0.0.1:{}", r.tls),
            "--syslog-framing=octet-counting".into(),
            format!("--tls-ca={ca}"),
            "--tls-server-name=localhost".into(),
        ],
        vec![
            format!("--syslog=tls://127.0.0.1:{}", r.tls),
            format!("--tls-ca={ca}"),
        ],
    ];
    let mut want = Vec::new();
    for args in &runs {
        let report = send(args, &inputs);
        assert!(
            report.contains(&format!("{} events", lines.len())),
            "{report}"
        );
        want.extend(lines.iter().cloned());
        let got = received(&r, want.len());
        assert_eq!(got.len(), want.len(), "after {args:?}");
        // UDP may reorder in principle; on loopback it does not, and TCP/TLS must not.
        assert_eq!(got, want, "after {args:?}");
    }
}

#[test]
#[ignore = "needs rsyslogd and openssl (.ci/run installs them and runs this with --ignored)"]
fn an_oversized_event_arrives_trimmed_and_marked() {
    let r = start_rsyslog();
    let dir = std::env::temp_dir().join(format!("dsm-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let big = dir.join("big.json");
    let cmd = "SQBFAFgA".repeat(4096);
    std::fs::write(&big, format!(
        r#"{{"category":"AdvancedHunting-DeviceProcessEvents","tenantId":"t","properties":{{"Timestamp":"2026-10-14T08:31:02Z","ActionType":"ProcessCreated","DeviceName":"ws-01.example","AccountName":"bob","ProcessCommandLine":"powershell.exe -enc {cmd}"}}}}"#
    )).expect("input");
    let whole = expected(&[big.as_path()], &[]);
    assert!(whole[0].len() > 30_000);
    let report = send(
        &[
            format!("--syslog=tcp://127.0.0.1:{}", r.tcp),
            "--max-message-size=4096".into(),
        ],
        &[big.as_path()],
    );
    assert!(report.contains("1 trimmed to fit"), "{report}");
    let got = received(&r, 1);
    assert_eq!(got.len(), 1);
    assert!(got[0].len() <= 4096, "{}", got[0].len());
    assert!(
        got[0].contains("\ttruncated=ProcessCommandLine\tdsmId="),
        "{}",
        &got[0][got[0].len() - 80..]
    );
    assert!(got[0].contains("\tusrName=bob\t"));
    let _ = std::fs::remove_dir_all(dir);
}

fn dsm_ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.rsplit("\tdsmId=").next().unwrap_or_default().to_string())
        .collect()
}

fn translate_status(args: &[String], inputs: &[&Path]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("translate")
        .args(args)
        .args(inputs)
        .output()
        .expect("translate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs rsyslogd and openssl (.ci/run installs them and runs this with --ignored)"]
fn events_wait_in_the_spool_while_the_receiver_is_down_and_survive_kill_9() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let first = root.join("device-network-events/failed-listening-request.input.json");
    let second = root.join("identity-logon-events/kerberos-success-and-ntlm-failure.input.json");
    let spool = std::env::temp_dir().join(format!("dsm-spool-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let port = free_port();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            format!("--syslog=tcp://127.0.0.1:{port}"),
            format!("--data-dir={}", spool.display()),
            "--syslog-retries=1".to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // The receiver is down: the events are accepted into the spool (exit 3), none lost.
    let (code, err) = translate_status(&args(&[]), &[first.as_path()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("3 kept in the spool"), "{err}");
    let (code, err) = translate_status(&args(&[]), &[second.as_path()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("3 events waiting from an earlier run"),
        "{err}"
    );

    // The receiver comes back. A drain killed with SIGKILL at some point loses nothing: the
    // next run delivers what is left, in order (a batch cut by the kill may come twice).
    let r = start_rsyslog_on(Some(port));
    let mut expected = expected_lines_of(&first);
    expected.extend(expected_lines_of(&second));
    let mut child = Command::new(BIN)
        .arg("translate")
        .args(args(&[]))
        .arg("/dev/null")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("drain run");
    std::thread::sleep(Duration::from_millis(5));
    let _ = child.kill();
    let _ = child.wait();
    let (code, err) = translate_status(&args(&[]), &[Path::new("/dev/null")]);
    assert_eq!(code, 0, "{err}");
    let got = received(&r, expected.len());
    let want_ids = dsm_ids(&expected);
    let mut firsts: Vec<String> = Vec::new();
    for id in dsm_ids(&got) {
        if !firsts.contains(&id) {
            firsts.push(id);
        }
    }
    assert_eq!(firsts, want_ids, "every event, in order");
    for line in &got {
        assert!(expected.contains(line), "a line arrived changed: {line}");
    }
    let _ = std::fs::remove_dir_all(spool);
}

fn expected_lines_of(input: &Path) -> Vec<String> {
    expected(&[input], &[])
}

/// A steady stream (inputs are named pipes a writer fills one after another, so one
/// `translate` process keeps taking events) while the receiver stops and comes back on its
/// port: every event arrives, in order, counted by dsmId.
#[test]
#[ignore = "needs rsyslogd and openssl (.ci/run installs them and runs this with --ignored)"]
fn a_receiver_outage_under_a_steady_stream_loses_nothing() {
    let tmp = std::env::temp_dir().join(format!("dsm-syslog-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("dir");
    let first = start_rsyslog();
    let port = first.tcp;
    let pipes: Vec<PathBuf> = (0..30).map(|i| tmp.join(format!("in-{i:02}"))).collect();
    for p in &pipes {
        run(Command::new("mkfifo").arg(p));
    }
    let payload = |i: usize| common::records(i as u64 * 10, 10);
    let all_inputs: Vec<PathBuf> = (0..30)
        .map(|i| {
            let p = tmp.join(format!("all-{i:02}.json"));
            std::fs::write(&p, payload(i)).expect("input");
            p
        })
        .collect();
    let refs: Vec<&Path> = all_inputs.iter().map(PathBuf::as_path).collect();
    let want = dsm_ids(&expected(&refs, &[]));
    assert_eq!(want.len(), 300);
    let child = Command::new(BIN)
        .arg("translate")
        .arg(format!("--syslog=tcp://127.0.0.1:{port}"))
        .arg(format!("--data-dir={}", tmp.join("data").display()))
        .args(&pipes)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("translate");
    let mut got = Vec::new();
    let mut receiver = Some(first);
    for (i, p) in pipes.iter().enumerate() {
        if i == 10 {
            // A graceful stop, as a collector restart would be.
            if let Some(mut r) = receiver.take() {
                run(Command::new("kill")
                    .arg("-TERM")
                    .arg(r.child.id().to_string()));
                let _ = r.child.wait();
                got.extend(received(&r, 0));
            }
        }
        if i == 20 {
            receiver = Some(start_rsyslog_on(Some(port)));
        }
        std::fs::write(p, payload(i)).expect("write to the pipe");
        std::thread::sleep(Duration::from_millis(40));
    }
    let out = child.wait_with_output().expect("translate ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    if let Some(r) = &receiver {
        let before = got.len();
        got.extend(received(r, 300 - before.min(300)));
    }
    let mut firsts: Vec<String> = Vec::new();
    for id in dsm_ids(&got) {
        if !firsts.contains(&id) {
            firsts.push(id);
        }
    }
    assert_eq!(firsts.len(), 300, "every event arrived: {err}");
    assert_eq!(firsts, want, "in order");
    let _ = std::fs::remove_dir_all(tmp);
}

/// `serve` end to end: a few thousand records of every family posted over HTTP reach both a
/// real rsyslog (TCP) and a LEEF file, every one, counted by dsmId.
#[test]
#[ignore = "needs rsyslogd and openssl (.ci/run installs them and runs this with --ignored)"]
fn serve_delivers_every_posted_record_to_rsyslog_and_to_a_file() {
    let r = start_rsyslog();
    let dir = std::env::temp_dir().join(format!("dsm-serve-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let config = format!(
        r#"data_dir = "{d}/data"
[http]
listen = "127.0.0.1:{port}"
[[outputs]]
name = "qradar"
type = "syslog"
url = "tcp://127.0.0.1:{tcp}"
[[outputs]]
name = "file"
type = "file"
path = "{d}/out.leef"
format = "leef"
"#,
        d = dir.display(),
        tcp = r.tcp
    );
    std::fs::write(dir.join("config.toml"), config).expect("config");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.join("config.toml"))
        .stderr(std::fs::File::create(dir.join("serve.log")).expect("log"))
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every fixture input (all families), then generated process records with unique ids.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for family in std::fs::read_dir(&root).expect("fixtures") {
        for f in std::fs::read_dir(family.expect("entry").path()).expect("family") {
            let p = f.expect("entry").path();
            if p.to_string_lossy().ends_with(".input.json") {
                bodies.push(std::fs::read(&p).expect("input"));
            }
        }
    }
    for batch in 0..30 {
        bodies.push(common::records(batch * 100, 100).into_bytes());
    }
    let url = format!("http://127.0.0.1:{port}/v1/ingest");
    let mut accepted = 0;
    for body in bodies {
        let reply = common::request("POST", &url, &[], body, None).expect("post");
        assert_eq!(reply.status, 202, "{}", reply.body);
        let v: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
        accepted += v["accepted"].as_u64().unwrap_or(0);
    }
    assert!(accepted >= 3000, "{accepted}");
    run(Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string()));
    let status = child.wait().expect("serve exits");
    assert!(status.success());
    let file: Vec<String> = std::fs::read_to_string(dir.join("out.leef"))
        .expect("file")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(file.len() as u64, accepted);
    let got = received(&r, file.len());
    let mut want = dsm_ids(&file);
    let mut have = dsm_ids(&got);
    want.sort();
    have.sort();
    assert_eq!(have, want, "rsyslog got every event the file got");
    let _ = std::fs::remove_dir_all(dir);
}
