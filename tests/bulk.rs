//! The `_bulk` output against a fault-injecting stand-in (tests/bulk_standin): per-item
//! results, splitting on 413, throttling, refused credentials, dead letters and their replay,
//! an outage under a steady stream, and a crash while draining.

mod bulk_standin;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bulk_standin::{accept_all, Reply, StandIn};
use common::records;

const BIN: &str = env!("CARGO_BIN_EXE_defender-dsm");

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("dsm-bulk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write input");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dsm(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out: Output = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn translate(url: &str, data: &Path, extra: &[&str], inputs: &[&Path]) -> (i32, String) {
    let mut args = vec![
        "translate".to_string(),
        format!("--bulk={url}"),
        format!("--data-dir={}", data.display()),
        "--bulk-retries=2".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    dsm(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
}

fn dead_letters(data: &Path) -> Vec<serde_json::Value> {
    let Ok(dir) = std::fs::read_dir(data.join("dead-letters")) else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for entry in dir {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        all.extend(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")),
        );
    }
    all
}

#[test]
fn per_item_failures_retry_that_item_only_and_refused_ones_become_dead_letters_until_replayed() {
    let tmp = TempDir::new("items");
    let input = tmp.write("in.json", &records(1, 5));
    let data = tmp.0.join("data");
    // First request: the second document throttled, the third refused by the index mapping.
    let standin = StandIn::start(Box::new(|n, docs| {
        if n == 0 {
            let mut s = vec![None; docs.len()];
            s[1] = Some(429);
            s[2] = Some(400);
            Reply::Items(s)
        } else {
            Reply::Items(vec![None; docs.len()])
        }
    }));
    let mut args = vec![
        "translate".to_string(),
        format!("--bulk={}", standin.url()),
        format!("--data-dir={}", data.display()),
        "--bulk-user=dsm".into(),
        input.display().to_string(),
    ];
    let (code, err) = dsm(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("DEFENDER_DSM_BULK_PASSWORD", "s3cret")],
    );
    assert_eq!(code, 2, "a dead letter makes the run fail: {err}");
    assert!(
        err.contains("4 events delivered") && err.contains("1 dead-lettered"),
        "{err}"
    );
    assert!(
        !err.contains("s3cret"),
        "the password is never printed: {err}"
    );
    {
        let seen = standin.seen.lock().expect("seen");
        assert_eq!(seen.requests.len(), 2, "one retry request");
        assert_eq!(seen.requests[0].len(), 5);
        assert_eq!(
            seen.requests[1]
                .iter()
                .map(|d| d.report_id())
                .collect::<Vec<_>>(),
            vec![2],
            "only the throttled item is sent again"
        );
        let h = &seen.headers[0];
        assert_eq!(h["content-encoding"], "gzip");
        assert_eq!(h["content-type"], "application/x-ndjson");
        // base64("dsm:s3cret")
        assert_eq!(h["authorization"], "Basic ZHNtOnMzY3JldA==");
        assert!(seen.requests[0]
            .iter()
            .all(|d| d.index == "logs-m365_defender.event-default" && d.id.len() == 32));
    }
    // A retried item is stored after the rest of its request (order holds between requests).
    assert_eq!(standin.stored_report_ids(), vec![1, 4, 5, 2]);
    let letters = dead_letters(&data);
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert!(
        l["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("400 mapper_parsing_exception"),
        "{l}"
    );
    assert_eq!(l["family"], "device-process-events");
    assert_eq!(l["source"], "eventhub");
    assert_eq!(l["output"], standin.url());
    assert_eq!(l["record"]["properties"]["ReportId"], 3);
    assert!(
        l["mapping_version"]
            .as_str()
            .unwrap_or_default()
            .starts_with("0.1.0+"),
        "{l}"
    );
    assert!(
        l["position"]
            .as_str()
            .unwrap_or_default()
            .contains("in.json:1 [2]"),
        "{l}"
    );

    // After the fix, the replay sends the dead letter, translated again, and removes it.
    args = vec![
        "replay-dead-letters".into(),
        format!("--bulk={}", standin.url()),
        format!("--data-dir={}", data.display()),
    ];
    let (code, err) = dsm(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 letters translated"), "{err}");
    assert_eq!(standin.stored_report_ids(), vec![1, 4, 5, 2, 3]);
    assert!(dead_letters(&data).is_empty());
}

#[test]
fn dead_letters_of_an_output_not_given_stay_for_later() {
    let tmp = TempDir::new("keep");
    let input = tmp.write("in.json", &records(10, 2));
    let data = tmp.0.join("data");
    let standin = StandIn::start(Box::new(|_, docs| {
        Reply::Items(vec![Some(400); docs.len()])
    }));
    let (code, err) = translate(&standin.url(), &data, &[], &[&input]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(dead_letters(&data).len(), 2);
    let other = StandIn::start(accept_all());
    let args = [
        "replay-dead-letters".to_string(),
        format!("--bulk={}", other.url()),
        format!("--data-dir={}", data.display()),
    ];
    let (code, err) = dsm(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 kept for outputs not given here"), "{err}");
    assert!(other.stored_report_ids().is_empty());
    assert_eq!(dead_letters(&data).len(), 2);
}

#[test]
fn a_request_too_large_is_split_and_an_event_too_large_alone_is_dead_lettered() {
    let tmp = TempDir::new("split");
    let input = tmp.write("in.json", &records(1, 7));
    let data = tmp.0.join("data");
    // More than two documents is too large; so is record 6 alone.
    let standin = StandIn::start(Box::new(|_, docs| {
        if docs.len() > 2 || docs.iter().any(|d| d.report_id() == 6) {
            Reply::Whole(413, None)
        } else {
            Reply::Items(vec![None; docs.len()])
        }
    }));
    let (code, err) = translate(&standin.url(), &data, &[], &[&input]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(standin.stored_report_ids(), vec![1, 2, 3, 4, 5, 7]);
    let letters = dead_letters(&data);
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("413"),
        "{}",
        letters[0]
    );
    assert_eq!(letters[0]["record"]["properties"]["ReportId"], 6);
}

#[test]
fn throttling_and_server_errors_are_waited_out_honouring_retry_after() {
    let tmp = TempDir::new("throttle");
    let input = tmp.write("in.json", &records(1, 3));
    let data = tmp.0.join("data");
    let standin = StandIn::start(Box::new(|n, docs| match n {
        0 => Reply::Whole(429, Some(1)),
        1 => Reply::Whole(503, None),
        _ => Reply::Items(vec![None; docs.len()]),
    }));
    let t = Instant::now();
    let (code, err) = translate(&standin.url(), &data, &[], &[&input]);
    assert_eq!(code, 0, "{err}");
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 was honoured"
    );
    assert_eq!(standin.stored_report_ids(), vec![1, 2, 3]);
    assert_eq!(standin.seen.lock().expect("seen").requests.len(), 3);
}

#[test]
fn refused_credentials_keep_the_events_spooled_until_a_later_run() {
    let tmp = TempDir::new("auth");
    let input = tmp.write("in.json", &records(1, 3));
    let data = tmp.0.join("data");
    let standin = StandIn::start(Box::new(|_, _| Reply::Whole(401, None)));
    let (code, err) = translate(&standin.url(), &data, &[], &[&input]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("3 kept in the spool") && err.contains("401"),
        "{err}"
    );
    standin.set_rule(accept_all());
    let (code, err) = translate(&standin.url(), &data, &[], &[Path::new("/dev/null")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(standin.stored_report_ids(), vec![1, 2, 3]);
}

/// A steady stream: inputs are named pipes that a writer fills one after another, so one
/// `translate` process keeps taking events while the endpoint goes away and comes back.
#[test]
fn an_outage_under_a_steady_stream_loses_nothing_and_keeps_order() {
    let tmp = TempDir::new("outage");
    let data = tmp.0.join("data");
    let mut standin = StandIn::start(accept_all());
    let pipes: Vec<PathBuf> = (0..30).map(|i| tmp.0.join(format!("in-{i:02}"))).collect();
    for p in &pipes {
        let ok = Command::new("mkfifo").arg(p).status().expect("mkfifo");
        assert!(ok.success());
    }
    let child = Command::new(BIN)
        .arg("translate")
        .arg(format!("--bulk={}", standin.url()))
        .arg(format!("--data-dir={}", data.display()))
        .arg("--bulk-retries=0")
        .args(&pipes)
        .stderr(Stdio::piped())
        .spawn()
        .expect("translate");
    let mut at_stop = 0;
    for (i, p) in pipes.iter().enumerate() {
        if i == 10 {
            standin.stop();
            at_stop = standin.stored_report_ids().len();
        }
        if i == 20 {
            assert_eq!(
                standin.stored_report_ids().len(),
                at_stop,
                "nothing arrives while it is down"
            );
            assert!(at_stop <= 100, "{at_stop}");
            standin.restart();
        }
        std::fs::write(p, records(i as u64 * 10, 10)).expect("write to the pipe");
        std::thread::sleep(Duration::from_millis(40));
    }
    let out = child.wait_with_output().expect("translate ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let ids = standin.stored_report_ids();
    assert_eq!(
        ids,
        (0..300).collect::<Vec<_>>(),
        "every event once, in order: {err}"
    );
}

#[test]
fn a_drain_killed_with_sigkill_loses_nothing_on_the_next_run() {
    let tmp = TempDir::new("kill");
    let input = tmp.write("in.json", &records(0, 3000));
    let data = tmp.0.join("data");
    let down = format!("http://{}", bulk_standin::unused_addr());
    let (code, err) = translate(&down, &data, &[], &[&input]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("3000 kept in the spool"), "{err}");

    // The cluster comes back on the same address; a drain is killed half way.
    let port: u16 = down
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let standin = StandIn::start_on(port, accept_all());
    let mut child = Command::new(BIN)
        .arg("translate")
        .arg(format!("--bulk={down}"))
        .arg(format!("--data-dir={}", data.display()))
        .arg("--bulk-max-docs=100")
        .arg("/dev/null")
        .stderr(Stdio::null())
        .spawn()
        .expect("drain");
    let t = Instant::now();
    while standin.stored_report_ids().len() < 500 && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    let before = standin.stored_report_ids().len();
    assert!(before < 3000, "killed before the end ({before})");
    let (code, err) = translate(&down, &data, &[], &[Path::new("/dev/null")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(standin.stored_report_ids(), (0..3000).collect::<Vec<_>>());
}

#[test]
fn api_keys_and_bearer_tokens_come_from_the_environment_and_requests_stay_within_bounds() {
    let tmp = TempDir::new("auth-kinds");
    let input = tmp.write("in.json", &records(1, 6));
    let standin = StandIn::start(accept_all());
    for (var, header) in [
        ("DEFENDER_DSM_BULK_API_KEY", "ApiKey a2V5OnNlY3JldA=="),
        ("DEFENDER_DSM_BULK_TOKEN", "Bearer eyJ0b2tlbiI"),
    ] {
        let value = header.split_once(' ').map(|(_, v)| v).unwrap_or_default();
        let args = [
            "translate".to_string(),
            format!("--bulk={}", standin.url()),
            "--bulk-no-gzip".into(),
            "--bulk-max-bytes=3000".into(),
            input.display().to_string(),
        ];
        let (code, err) = dsm(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &[(var, value)],
        );
        assert_eq!(code, 0, "{err}");
        assert!(!err.contains(value), "the secret is never printed: {err}");
        let seen = standin.seen.lock().expect("seen");
        let last = seen.headers.last().expect("a request");
        assert_eq!(last["authorization"], header);
        assert!(last.get("content-encoding").is_none());
    }
    let seen = standin.seen.lock().expect("seen");
    // Six documents of several hundred bytes each: a 3,000-byte bound splits every run's six.
    assert!(seen.requests.len() >= 4, "{}", seen.requests.len());
    assert!(seen.requests.iter().all(|r| !r.is_empty() && r.len() < 6));
}

#[test]
fn one_output_down_does_not_hold_up_another() {
    let tmp = TempDir::new("two");
    let input = tmp.write("in.json", &records(1, 4));
    let data = tmp.0.join("data");
    let standin = StandIn::start(accept_all());
    let down = bulk_standin::unused_addr();
    let args = [
        "translate".to_string(),
        format!("--bulk={}", standin.url()),
        format!("--syslog=tcp://{down}"),
        "--syslog-retries=1".into(),
        format!("--data-dir={}", data.display()),
        input.display().to_string(),
    ];
    let (code, err) = dsm(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("{}: 4 events delivered", standin.url())),
        "{err}"
    );
    assert!(
        err.contains(&format!("tcp://{down}: 0 events delivered"))
            && err.contains("4 kept in the spool"),
        "{err}"
    );
    assert_eq!(standin.stored_report_ids(), vec![1, 2, 3, 4]);
}
