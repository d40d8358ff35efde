//! The fault suite: `serve` against a failing peer or a failing disk, black box, loopback only.
//! A real rsyslog that is frozen (SIGSTOP: connections open, nothing read) or gone; a data
//! directory on a small tmpfs that fills up or turns read-only; `kill -9` under load. Each test
//! checks that ingest is never held up, that refusals are 503 with `Retry-After`, that readiness
//! and the metrics tell the truth, and that every accepted record arrives (duplicates bounded).
//!
//! Needs rsyslogd (`.ci/run` installs it) and root for the tmpfs mounts (CI runs as root):
//! `cargo test --test faults -- --ignored --test-threads 1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::rsyslog::{received, run, start_rsyslog, start_rsyslog_on, Rsyslog};
use common::{records, request, Reply, ServeProcess};

fn post(s: &ServeProcess, body: String) -> (Reply, Duration) {
    let url = format!("http://127.0.0.1:{}/v1/ingest", s.port);
    let t = Instant::now();
    let r = request("POST", &url, &[], body.into_bytes(), None).expect("post");
    (r, t.elapsed())
}

/// Posts `batch` records at a time (numbered on from `accepted`, counted in it) until one is not
/// taken, each answered within 3 s, and returns that answer; `why` if `most` are taken first.
fn post_until_refused(
    s: &ServeProcess,
    accepted: &mut u64,
    batch: u64,
    most: u64,
    why: &str,
) -> Reply {
    loop {
        let (reply, took) = post(s, records(*accepted, batch));
        assert!(took < Duration::from_secs(3), "{took:?}");
        if reply.status != 202 {
            return reply;
        }
        *accepted += batch;
        assert!(*accepted < most, "{why}");
    }
}

fn get(s: &ServeProcess, path: &str) -> Reply {
    let url = format!("http://127.0.0.1:{}{path}", s.port);
    request("GET", &url, &[], Vec::new(), None).expect("get")
}

fn wait_until(what: &str, secs: u64, s: &ServeProcess, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} within {secs} s; log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How often each ReportId (`ws-<id>.example`) arrived at rsyslog.
fn arrivals(r: &Rsyslog) -> BTreeMap<u64, u32> {
    let mut seen = BTreeMap::new();
    for line in received(r, 0) {
        let id = line
            .split("ws-")
            .nth(1)
            .and_then(|rest| rest.split('.').next())
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id {
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    seen
}

fn signal(pid: u32, sig: &str) {
    run(Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string()));
}

/// A tmpfs of `size` at `at`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let uid = String::from_utf8(Command::new("id").arg("-u").output().expect("id").stdout)
            .unwrap_or_default();
        assert_eq!(
            uid.trim(),
            "0",
            "the fault suite mounts tmpfs file systems: run it as root (CI does)"
        );
        std::fs::create_dir_all(at).expect("mount point");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn metric(s: &ServeProcess, line: &str) -> bool {
    s.metrics().lines().any(|l| l == line)
}

#[test]
#[ignore = "needs rsyslogd (.ci/run installs it and runs the fault suite)"]
fn a_frozen_receiver_never_holds_up_ingest_and_gets_everything_once_it_wakes() {
    let r = start_rsyslog();
    let mut s = ServeProcess::new(
        "fault-frozen",
        &format!(
            "[[outputs]]\nname = \"qradar\"\ntype = \"syslog\"\nurl = \"tcp://127.0.0.1:{}\"\ntimeout_seconds = 2\n",
            r.tcp
        ),
    );
    s.spawn();
    let (first, _) = post(&s, records(0, 10));
    assert_eq!(first.status, 202, "{}", first.body);
    wait_until("the first events at rsyslog", 20, &s, || {
        arrivals(&r).len() == 10
    });
    signal(r.child.id(), "STOP");
    // Far more than the socket buffers hold: the receiver reads nothing.
    let mut accepted = 10;
    let mut slowest = Duration::ZERO;
    for k in 0..40 {
        let (reply, took) = post(&s, records(10 + k * 1000, 1000));
        assert_eq!(reply.status, 202, "{}", reply.body);
        slowest = slowest.max(took);
        accepted += 1000;
    }
    assert!(
        slowest < Duration::from_secs(3),
        "every POST is answered within 3 s while the receiver is frozen (slowest {slowest:?})"
    );
    wait_until("the output is reported down", 30, &s, || {
        metric(&s, "dsm_output_up{output=\"qradar\"} 0")
    });
    // A frozen receiver still completes connections, so the output flaps: each new
    // connection takes a few events before the writes time out again. Readiness says so while
    // it is down, and spooling outputs count as ready for those who ask.
    wait_until("readiness says why", 30, &s, || {
        let ready = get(&s, "/readyz");
        ready.status == 503
            && ready.body.contains("qradar: down (")
            && ready.body.contains("timed out")
            && get(&s, "/readyz?spooling=ready").status == 200
    });
    assert!(s.log().contains("output down"), "{}", s.log());
    signal(r.child.id(), "CONT");
    wait_until("every accepted record at rsyslog", 90, &s, || {
        arrivals(&r).len() as u64 == accepted
    });
    wait_until("the output is reported up again", 30, &s, || {
        metric(&s, "dsm_output_up{output=\"qradar\"} 1")
    });
    assert_eq!(get(&s, "/readyz").status, 200);
    wait_until("the recovery logged", 30, &s, || {
        s.log().contains("output up")
    });
    s.stop();
    let seen = arrivals(&r);
    let twice: u32 = seen.values().map(|n| n - 1).sum();
    assert!(
        (0..accepted).all(|id| seen.contains_key(&id)),
        "no accepted record lost"
    );
    eprintln!("frozen receiver: {accepted} accepted, all delivered, {twice} delivered twice, slowest POST {slowest:?}");
}

#[test]
#[ignore = "needs rsyslogd and root for a tmpfs (.ci/run runs the fault suite as root)"]
fn a_full_disk_refuses_with_503_delivers_what_it_holds_and_recovers_by_itself() {
    let down = start_rsyslog();
    let tcp = down.tcp;
    drop(down);
    let mut s = ServeProcess::new(
        "fault-disk",
        &format!(
            "[[outputs]]\nname = \"qradar\"\ntype = \"syslog\"\nurl = \"tcp://127.0.0.1:{tcp}\"\n"
        ),
    );
    let disk = Tmpfs::mount(&s.dir.join("data"), "4m");
    s.spawn();
    // The receiver is down: events go to the spool until the disk is full.
    let mut accepted = 0u64;
    let refused = post_until_refused(&s, &mut accepted, 500, 100_000, "the disk never filled");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.headers["retry-after"], "5");
    assert!(
        refused.body.contains("cannot be written"),
        "{}",
        refused.body
    );
    let ready = get(&s, "/readyz");
    assert_eq!(ready.status, 503);
    assert!(
        ready.body.contains("qradar: refusing new events"),
        "{}",
        ready.body
    );
    assert!(s.log().contains("intake down"), "{}", s.log());
    // Killed and started again on the full disk: it opens its spool without new space.
    s.kill9();
    s.spawn();
    let (again, _) = post(&s, records(900_000, 500));
    assert_eq!(again.status, 503, "still full: {}", again.body);
    // The receiver comes back while the disk is still full: what was accepted is delivered,
    // acknowledged in place, and the head batch is not sent again and again.
    let r = start_rsyslog_on(Some(tcp));
    wait_until("every accepted record at rsyslog", 60, &s, || {
        arrivals(&r).len() as u64 == accepted
    });
    std::thread::sleep(Duration::from_secs(2));
    let seen = arrivals(&r);
    let twice: u32 = seen.values().map(|n| n - 1).sum();
    assert!(twice <= 1000, "at most one batch twice, got {twice}");
    // Delivered segments are gone: the spool takes new events by itself.
    wait_until("ingest accepted again", 30, &s, || {
        post(&s, records(500_000, 100)).0.status == 202
    });
    wait_until("the intake reported up", 30, &s, || {
        post(&s, records(600_000, 10)).0.status == 202 && s.log().contains("intake up")
    });
    assert_eq!(get(&s, "/readyz").status, 200);
    s.stop();
    drop(disk);
    eprintln!(
        "full disk: {accepted} accepted before 503, all delivered after, {twice} delivered twice"
    );
}

#[test]
#[ignore = "needs rsyslogd and root to run serve as nobody (.ci/run runs the fault suite as root)"]
fn a_spool_directory_turned_unwritable_refuses_delivers_what_it_holds_and_recovers() {
    let down = start_rsyslog();
    let tcp = down.tcp;
    drop(down);
    let mut s = ServeProcess::new(
        "fault-eacces",
        &format!(
            "[[outputs]]\nname = \"qradar\"\ntype = \"syslog\"\nurl = \"tcp://127.0.0.1:{tcp}\"\nspool_segment_bytes = 65536\n"
        ),
    );
    s.spawn_as_nobody();
    let mut accepted = 0u64;
    for _ in 0..4 {
        let (reply, _) = post(&s, records(accepted, 200));
        assert_eq!(reply.status, 202, "{}", reply.body);
        accepted += 200;
    }
    // Files in the spool directory can no longer be made or removed (EACCES for `nobody`).
    let spool = s.dir.join("data").join("spool").join("qradar");
    let chmod = |mode: &str| run(Command::new("chmod").arg(mode).arg(&spool));
    chmod("0555");
    let refused = post_until_refused(
        &s,
        &mut accepted,
        200,
        20_000,
        "a new spool file was never needed",
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.headers["retry-after"], "5");
    assert!(
        refused.body.contains("Permission denied"),
        "{}",
        refused.body
    );
    assert_eq!(get(&s, "/readyz").status, 503);
    // The receiver comes back: what the spool holds is delivered, acknowledged in place (no
    // new file needed), each event once.
    let r = start_rsyslog_on(Some(tcp));
    wait_until("every accepted record at rsyslog", 60, &s, || {
        arrivals(&r).len() as u64 == accepted
    });
    std::thread::sleep(Duration::from_secs(2));
    let twice: u32 = arrivals(&r).values().map(|n| n - 1).sum();
    assert_eq!(twice, 0, "no resend loop");
    chmod("0755");
    wait_until("ingest accepted again", 30, &s, || {
        post(&s, records(900_000, 100)).0.status == 202
    });
    assert_eq!(get(&s, "/readyz").status, 200);
    s.stop();
    eprintln!("unwritable spool directory: {accepted} accepted before 503, all delivered once");
}

#[test]
#[ignore = "needs root for a tmpfs (.ci/run runs the fault suite as root)"]
fn a_file_output_on_a_full_disk_writes_whole_lines_or_none() {
    let mut s = ServeProcess::new(
        "fault-file",
        "[[outputs]]\nname = \"small\"\ntype = \"file\"\npath = \"{dir}/small/out.leef\"\nformat = \"leef\"\n",
    );
    let disk = Tmpfs::mount(&s.dir.join("small"), "2m");
    let filler = s.dir.join("small").join("filler");
    std::fs::write(&filler, vec![b'f'; 1536 * 1024]).expect("filler");
    s.spawn();
    let mut accepted = 0u64;
    loop {
        let (reply, _) = post(&s, records(accepted, 100));
        match reply.status {
            202 => accepted += 100,
            503 => {
                assert_eq!(reply.headers["retry-after"], "5");
                break;
            }
            other => panic!("{other}: {}", reply.body),
        }
        assert!(accepted < 100_000, "the disk never filled");
    }
    let out = s.dir.join("small").join("out.leef");
    let whole = |accepted: u64| {
        let text = std::fs::read_to_string(&out).expect("out");
        assert!(text.is_empty() || text.ends_with('\n'), "no torn last line");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len() as u64,
            accepted,
            "one whole line per accepted record"
        );
        assert!(lines
            .iter()
            .all(|l| l.contains("LEEF:2.0|") && l.contains("\tdsmId=")));
    };
    whole(accepted);
    // Space comes back: the output writes again, and the lines stay whole.
    std::fs::remove_file(filler).expect("free");
    let (reply, _) = post(&s, records(accepted, 100));
    assert_eq!(reply.status, 202, "{}", reply.body);
    whole(accepted + 100);
    s.stop();
    drop(disk);
}

#[test]
#[ignore = "needs rsyslogd (.ci/run installs it and runs the fault suite)"]
fn repeated_kill_9_under_load_loses_no_accepted_record() {
    let r = start_rsyslog();
    let mut s = ServeProcess::new(
        "fault-kill",
        &format!(
            "[[outputs]]\nname = \"qradar\"\ntype = \"syslog\"\nurl = \"tcp://127.0.0.1:{}\"\n",
            r.tcp
        ),
    );
    s.spawn();
    let url = format!("http://127.0.0.1:{}/v1/ingest", s.port);
    let mut accepted = Vec::new();
    let mut next = 0u64;
    for round in 0..4 {
        // A client posting as fast as it is answered, while the service is killed under it.
        let poster = {
            let url = url.clone();
            let from = next;
            std::thread::spawn(move || {
                let mut taken = Vec::new();
                let mut at = from;
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(1500) {
                    let body = records(at, 200).into_bytes();
                    match request("POST", &url, &[], body, None) {
                        Ok(r) if r.status == 202 => taken.push(at),
                        Ok(_) | Err(_) => {}
                    }
                    at += 200;
                }
                (taken, at)
            })
        };
        std::thread::sleep(Duration::from_millis(700 + 150 * round));
        s.kill9();
        let (taken, at) = poster.join().expect("poster");
        accepted.extend(taken);
        next = at;
        s.spawn();
    }
    s.stop();
    let want: u64 = accepted.len() as u64 * 200;
    assert!(want > 0);
    wait_until("every accepted record at rsyslog", 60, &s, || {
        let seen = arrivals(&r);
        accepted
            .iter()
            .all(|from| (*from..from + 200).all(|id| seen.contains_key(&id)))
    });
    eprintln!("kill -9 x4 under load: {want} records accepted, 0 lost");
}

/// One Graph incidents page: one incident with a 100 KB title and 10,000 empty alerts (142 KB).
fn amplifying_incident() -> String {
    let alerts = vec!["{}"; 10_000].join(",");
    format!(
        r#"{{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#security/incidents","value":[{{"id":"29","tenantId":"t","status":"active","severity":"high","createdDateTime":"2026-10-14T08:31:02Z","lastUpdateDateTime":"2026-10-14T08:31:02Z","incidentWebUrl":"https://security.microsoft.com/incidents/29","displayName":"{}","alerts":[{alerts}]}}]}}"#,
        "x".repeat(100_000)
    )
}

/// A vulnerability bundle: 10,000 device rows on one CVE whose description is 100 KB.
fn amplifying_bundle() -> String {
    let rows: Vec<String> = (0..10_000)
        .map(|i| format!(r#"{{"id":"m{i}-_-CVE-1-_-x","cveId":"CVE-1","machineId":"m{i}","productName":"edge","severity":"High"}}"#))
        .collect();
    format!(
        r#"{{"vulnerabilities":[{{"id":"CVE-1","name":"CVE-1","severity":"High","description":"{}"}}],"machines":[],"fetchedDateTime":"2026-10-14T08:31:02Z","machinesVulnerabilities":[{}]}}"#,
        "d".repeat(100_000),
        rows.join(",")
    )
}

#[test]
#[ignore = "the fault suite (.ci/run runs it)"]
fn amplifying_payloads_stay_within_the_memory_budget() {
    let mut s = ServeProcess::new(
        "fault-amplify",
        "[[outputs]]\nname = \"ecs\"\ntype = \"file\"\npath = \"{dir}/events.ecs.ndjson\"\nrotate_bytes = 0\n",
    );
    s.spawn();
    let bodies = [amplifying_incident(), amplifying_bundle()];
    // Four requests at once, each both payloads in turn.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("http://127.0.0.1:{}/v1/ingest", s.port);
            let bodies = bodies.clone();
            std::thread::spawn(move || {
                bodies
                    .into_iter()
                    .map(|b| request("POST", &url, &[], b.into_bytes(), None).expect("post"))
                    .map(|r| (r.status, r.body))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for w in workers {
        for (status, body) in w.join().expect("worker") {
            assert_eq!(status, 202, "{body}");
            assert!(body.contains("\"accepted\":10000"), "{body}");
        }
    }
    let peak_mib = s.peak_rss_kib() / 1024;
    // The file outputs rotate at 100 MB: every file they wrote, by line length.
    let lines = |name: &str| -> Vec<usize> {
        let mut lengths = Vec::new();
        for k in 0..=5 {
            let file = match k {
                0 => s.dir.join(name),
                k => s.dir.join(format!("{name}.{k}")),
            };
            if let Ok(f) = std::fs::File::open(file) {
                let r = std::io::BufReader::new(f);
                lengths.extend(std::io::BufRead::lines(r).map(|l| l.map_or(0, |l| l.len())));
            }
        }
        lengths
    };
    let (leef, ecs) = (lines("events.leef"), lines("events.ecs.ndjson"));
    let mib = |l: &[usize]| l.iter().sum::<usize>() >> 20;
    eprintln!(
        "amplification: 4 x (a 142 KB incidents page and a 1.1 MB vulnerability bundle) at once, 80,000 events, {} MiB of LEEF and {} MiB of ECS written, peak RSS {peak_mib} MiB",
        mib(&leef),
        mib(&ecs)
    );
    assert!(
        peak_mib < 512,
        "peak RSS {peak_mib} MiB over the 512 MiB budget"
    );
    assert_eq!((leef.len(), ecs.len()), (80_000, 80_000));
    // The long texts are whole once per incident and CVE, cut in the other events (LEEF does
    // not carry a CVE's description).
    let long = |l: &[usize]| l.iter().filter(|&&n| n > 100_000).count();
    assert_eq!((long(&leef), long(&ecs)), (4, 8));
    assert!(leef
        .iter()
        .chain(&ecs)
        .all(|&n| n < 100_000 || n > 100_000 && n < 400_000));
    s.stop();
}

#[test]
#[ignore = "the fault suite (.ci/run runs it)"]
fn a_payload_past_the_output_limit_is_refused_with_413_naming_the_limit() {
    let mut s = ServeProcess::new("fault-output-limit", "");
    let config = s.dir.join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("max_payload_output_bytes = 3000000\n{text}"),
    )
    .expect("config");
    s.spawn();
    let (reply, _) = post(&s, amplifying_incident());
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(
        reply.body.contains("max_payload_output_bytes"),
        "{}",
        reply.body
    );
    let accepted: u64 = reply
        .body
        .split("the first ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .expect("how many were accepted");
    assert!(accepted > 0 && accepted < 10_000, "{}", reply.body);
    assert_eq!(
        s.lines().len() as u64,
        accepted,
        "every accepted record written, no other"
    );
    s.stop();
}
