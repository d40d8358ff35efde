//! `defender-dsm serve` as a running server: every status code of the ingest endpoint, gzip,
//! the bearer token, size limits, a full spool, health, readiness and metrics, mapping hot
//! reload accepted and rejected, and a shutdown that drains.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{make_certs, Reply};

const BIN: &str = env!("CARGO_BIN_EXE_defender-dsm");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// Starts `serve` in a fresh directory: `http` holds extra `[http]` keys, `config` the tables
/// after it (`$DIR` is the directory); `listen` and `data_dir` are set here.
fn start(name: &str, http: &str, config: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("dsm-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let text = format!(
        "data_dir = \"{d}/data\"\nshutdown_grace_seconds = 10\n[http]\nlisten = \"127.0.0.1:{port}\"\n{http}\n{config}\n",
        d = dir.display()
    );
    let text = text.replace("$DIR", &dir.display().to_string());
    std::fs::write(dir.join("config.toml"), text).expect("config");
    let child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stderr(std::fs::File::create(dir.join("serve.log")).expect("log"))
        .spawn()
        .expect("serve");
    let server = Server {
        child: Some(child),
        port,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "serve did not start: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn stop(&mut self) -> i32 {
        let Some(mut c) = self.child.take() else {
            return -1;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().expect("exit").code().unwrap_or(-1)
    }
}

fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    common::request(method, url, headers, body, None).expect("request")
}

fn post(s: &Server, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    request("POST", &s.url(path), headers, body.to_vec())
}

fn get(s: &Server, path: &str) -> Reply {
    request("GET", &s.url(path), &[], Vec::new())
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(root().join("fixtures").join(path)).expect("fixture")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

const FILES: &str = r#"
[[outputs]]
name = "leef"
type = "file"
path = "$DIR/out/events.leef"
format = "leef"

[[outputs]]
name = "ecs"
type = "file"
path = "$DIR/out/events.ecs.ndjson"
format = "ecs"
"#;

#[test]
fn ingest_answers_202_once_written_and_400_415_for_bad_bodies_taking_nothing_of_them() {
    let mut s = start("ingest", "", FILES);
    let body = fixture("device-process-events/process-created.input.json");
    let r = post(&s, "/v1/ingest", &[], &body);
    assert_eq!((r.status, r.body.as_str()), (202, "{\"accepted\":1}"));
    let r = post(
        &s,
        "/v1/ingest?source=graph-alert",
        &[("content-encoding", "gzip")],
        &gzip(&fixture("graph-alert/execution-alert-page.input.json")),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let leef = s.file("out/events.leef");
    let ecs = s.file("out/events.ecs.ndjson");
    let expected_leef = String::from_utf8(fixture(
        "device-process-events/process-created.expected.leef",
    ))
    .expect("utf-8");
    assert!(leef.starts_with(&expected_leef), "{leef}");
    assert_eq!(leef.lines().count(), ecs.lines().count());

    // NDJSON whose second line is cut: refused whole, the first line's record not written.
    let mut two = String::from_utf8(body.clone())
        .expect("utf-8")
        .replace('\n', "");
    two.push_str("\n{\"records\":[{\"category\":");
    let before = s.file("out/events.leef");
    let r = post(&s, "/v1/ingest", &[], two.as_bytes());
    assert_eq!(r.status, 400);
    assert!(r.body.contains("body:2:"), "{}", r.body);
    assert_eq!(s.file("out/events.leef"), before);

    let r = post(&s, "/v1/ingest?source=kafka", &[], &body);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("unknown source kind `kafka`"), "{}", r.body);
    let r = post(&s, "/v1/ingest", &[("content-encoding", "br")], &body);
    assert_eq!(r.status, 415);
    let r = post(
        &s,
        "/v1/ingest",
        &[("content-encoding", "gzip")],
        b"not gzip",
    );
    assert_eq!(r.status, 400);
    let r = post(&s, "/v1/ingest", &[], &[0xff, 0xfe, b'{']);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("not UTF-8"), "{}", r.body);

    let m = get(&s, "/metrics").body;
    assert!(m.contains("dsm_http_requests_total{code=\"202\"} 2"), "{m}");
    assert!(m.contains("dsm_http_requests_total{code=\"400\"} 4"), "{m}");
    assert!(m.contains("dsm_http_requests_total{code=\"415\"} 1"), "{m}");
    assert!(m.contains(
        "dsm_records_total{input=\"http\",family=\"device-process-events\",outcome=\"mapped\"} 1"
    ));
    assert!(
        m.contains("dsm_output_events_total{output=\"leef\",result=\"delivered\"} 2"),
        "{m}"
    );
    assert!(m.contains("dsm_mapping_info{version=\"0.1.0+"), "{m}");
    let leef_bytes = s.file("out/events.leef").len() as u64 - 2; // less the two line feeds
    assert!(
        m.contains(&format!(
            "dsm_output_bytes_total{{output=\"leef\"}} {leef_bytes}"
        )),
        "{m}"
    );
    assert_eq!(get(&s, "/healthz").status, 200);
    assert_eq!(get(&s, "/readyz").status, 200);
    assert_eq!(s.stop(), 0, "{}", s.log());
}

#[test]
fn the_bearer_token_and_the_size_limit_are_enforced() {
    let token_file = std::env::temp_dir().join(format!("dsm-token-{}", std::process::id()));
    std::fs::write(&token_file, "t0ken-from-file\n").expect("token");
    let http = format!(
        "bearer_token_file = \"{}\"\nmax_body_bytes = 4000\n",
        token_file.display()
    );
    let s = start("auth", &http, FILES);
    let body = fixture("device-process-events/process-created.input.json");
    let r = post(&s, "/v1/ingest", &[], &body);
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let r = post(
        &s,
        "/v1/ingest",
        &[("authorization", "Bearer wrong")],
        &body,
    );
    assert_eq!(r.status, 401);
    let auth = [("authorization", "Bearer t0ken-from-file")];
    let r = post(&s, "/v1/ingest", &auth, &body);
    assert_eq!(r.status, 202, "{}", r.body);
    let big = vec![b' '; 5000];
    assert_eq!(post(&s, "/v1/ingest", &auth, &big).status, 413);
    // Small compressed, too large once decompressed.
    let r = post(
        &s,
        "/v1/ingest",
        &[auth[0], ("content-encoding", "gzip")],
        &gzip(&big),
    );
    assert_eq!(r.status, 413);
    assert!(
        !s.log().contains("t0ken-from-file"),
        "the token is never logged"
    );
    let _ = std::fs::remove_file(token_file);
}

#[test]
fn a_full_spool_answers_503_with_retry_after_and_readyz_says_why() {
    let down = free_port();
    let config = format!(
        r#"
[[outputs]]
name = "qradar"
type = "syslog"
url = "tcp://127.0.0.1:{down}"
retries = 0
spool_max_bytes = 6000
"#
    );
    let mut s = start("full", "", &config);
    let body = fixture("device-network-events/failed-listening-request.input.json");
    let r = post(&s, "/v1/ingest", &[], &body);
    assert_eq!(
        r.status, 202,
        "spooled while the receiver is down: {}",
        r.body
    );
    let mut last = r;
    for _ in 0..5 {
        last = post(&s, "/v1/ingest", &[], &body);
        if last.status != 202 {
            break;
        }
    }
    assert_eq!(last.status, 503, "{}", last.body);
    assert_eq!(last.headers["retry-after"], "5");
    assert!(last.body.contains("is full"), "{}", last.body);
    let ready = get(&s, "/readyz");
    assert_eq!(ready.status, 503);
    assert!(
        ready
            .body
            .contains("qradar: refusing new events (the spool of qradar is full"),
        "{}",
        ready.body
    );
    let m = get(&s, "/metrics").body;
    assert!(m.contains("dsm_output_up{output=\"qradar\"} 0"), "{m}");
    assert!(m.contains("dsm_http_requests_total{code=\"503\"} 1"), "{m}");
    // What was accepted is in the spool when the service stops.
    assert_eq!(s.stop(), 0);
    assert!(s.log().contains("kept in the spool"), "{}", s.log());
}

/// A copy of the bundled mappings that the test can change.
fn copy_mappings(to: &Path) {
    let mut stack = vec![(root().join("mappings"), to.to_path_buf())];
    while let Some((from, to)) = stack.pop() {
        std::fs::create_dir_all(&to).expect("dir");
        for e in std::fs::read_dir(&from).expect("mappings") {
            let p = e.expect("entry").path();
            let target = to.join(p.file_name().expect("name"));
            if p.is_dir() {
                stack.push((p, target));
            } else {
                std::fs::copy(&p, &target).expect("copy");
            }
        }
    }
}

fn wait_for(s: &Server, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = get(s, "/metrics").body;
        if m.contains(needle) || Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn mapping_reload_applies_a_set_that_replays_cleanly_and_rejects_others() {
    let dir = std::env::temp_dir().join(format!("dsm-serve-maps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_mappings(&dir);
    let config = format!(
        "{FILES}\n[mappings]\ndir = \"{}\"\nfixtures = \"{}\"\nwatch_interval_seconds = 1\n",
        dir.display(),
        root().join("fixtures").display()
    );
    let s = start("reload", "", &config);
    let version = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("dsm_mapping_info"))
            .unwrap_or_default()
            .to_string()
    };
    let first = version(&get(&s, "/metrics").body);

    // A change that keeps every fixture's output: applied.
    let file = dir.join("device-process-events.xml");
    let text = std::fs::read_to_string(&file).expect("mapping");
    std::fs::write(&file, format!("{text}\n<!-- reviewed -->\n")).expect("write");
    let m = wait_for(&s, "dsm_mapping_reloads_total{result=\"applied\"} 1");
    assert!(
        m.contains("dsm_mapping_reloads_total{result=\"applied\"} 1"),
        "{m}\n{}",
        s.log()
    );
    assert_ne!(version(&m), first);

    // A change that alters a fixture's LEEF: rejected, the running set stays.
    std::fs::write(
        &file,
        text.replacen("leef=\"usrName\"", "leef=\"userName\"", 1),
    )
    .expect("write");
    let m = wait_for(&s, "dsm_mapping_reloads_total{result=\"rejected\"} 1");
    assert!(
        m.contains("dsm_mapping_reloads_total{result=\"rejected\"} 1"),
        "{m}\n{}",
        s.log()
    );
    assert!(s.log().contains("fixture problems"), "{}", s.log());
    let body = fixture("device-process-events/process-created.input.json");
    assert_eq!(post(&s, "/v1/ingest", &[], &body).status, 202);
    assert!(s.file("out/events.leef").contains("\tusrName="));

    // Broken XML, on SIGHUP too: rejected with the position.
    std::fs::write(&file, "<dsm-mapping family=").expect("write");
    if let Some(c) = &s.child {
        let _ = Command::new("kill")
            .arg("-HUP")
            .arg(c.id().to_string())
            .status();
    }
    let m = wait_for(&s, "dsm_mapping_reloads_total{result=\"rejected\"} 2");
    assert!(
        m.contains("dsm_mapping_reloads_total{result=\"rejected\"} 2"),
        "{m}"
    );
    assert!(
        s.log().contains("device-process-events.xml:1:"),
        "{}",
        s.log()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn shutdown_drains_what_was_accepted_and_bad_configs_name_the_key() {
    let mut s = start("drain", "", FILES);
    let body = fixture("device-file-events/modified-deleted-renamed.input.json");
    let mut accepted = 0;
    for _ in 0..20 {
        let r = post(&s, "/v1/ingest", &[], &body);
        assert_eq!(r.status, 202);
        accepted += r
            .body
            .trim_start_matches("{\"accepted\":")
            .trim_end_matches('}')
            .parse::<usize>()
            .unwrap_or(0);
    }
    assert_eq!(s.stop(), 0, "{}", s.log());
    assert_eq!(s.file("out/events.leef").lines().count(), accepted);
    assert!(s.log().contains("draining outputs"), "{}", s.log());

    let bad = s.dir.join("bad.toml");
    std::fs::write(&bad, "[http]\nlisten = \"127.0.0.1:1\"\nlisen = 2\n").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&bad)
        .stdout(Stdio::null())
        .output()
        .expect("serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("bad.toml") && err.contains("lisen"), "{err}");
}

#[test]
fn routes_admit_by_family_and_drop_fields_per_output() {
    let config = r#"
[[outputs]]
name = "process-leef"
type = "file"
path = "$DIR/process.leef"
format = "leef"
include_families = ["device-process-events"]
drop_fields = ["ProcessCommandLine"]

[[outputs]]
name = "process-ecs"
type = "file"
path = "$DIR/process.ecs.ndjson"
format = "ecs"
include_categories = ["DeviceProcessEvents"]
drop_fields = ["process.command_line", "process.args", "m365_defender"]

[[outputs]]
name = "the-rest"
type = "file"
path = "$DIR/rest.ecs.ndjson"
format = "ecs"
exclude_families = ["device-process-events"]
"#;
    let s = start("routes", "", config);
    for f in [
        "device-process-events/process-created.input.json",
        "graph-alert/execution-alert-page.input.json",
    ] {
        assert_eq!(post(&s, "/v1/ingest", &[], &fixture(f)).status, 202);
    }
    let leef = s.file("process.leef");
    assert_eq!(leef.lines().count(), 1);
    assert!(!leef.contains("\tProcessCommandLine="), "{leef}");
    assert!(leef.contains("\tInitiatingProcessCommandLine="), "{leef}");
    assert!(leef.contains("\tusrName="), "{leef}");
    let ecs: serde_json::Value =
        serde_json::from_str(s.file("process.ecs.ndjson").trim()).expect("one document");
    assert!(ecs["process"]["command_line"].is_null() && ecs["process"]["args"].is_null());
    assert!(ecs["process"]["executable"].is_string(), "{ecs}");
    assert!(ecs.get("m365_defender").is_none(), "{ecs}");
    let rest = s.file("rest.ecs.ndjson");
    assert_eq!(rest.lines().count(), 1);
    assert!(rest.contains("\"kind\":\"alert\""), "{rest}");
    // What each route kept out is counted, by reason.
    let m = get(&s, "/metrics").body;
    for kept_out in [
        "dsm_output_filtered_total{output=\"process-leef\",reason=\"family\"} 1",
        "dsm_output_filtered_total{output=\"process-ecs\",reason=\"category\"} 1",
        "dsm_output_filtered_total{output=\"the-rest\",reason=\"family\"} 1",
    ] {
        assert!(m.contains(kept_out), "{kept_out}: {m}");
    }
}

#[test]
fn ingest_over_https_with_the_configured_certificate() {
    let certs = std::env::temp_dir().join(format!("dsm-serve-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&certs);
    std::fs::create_dir_all(&certs).expect("dir");
    make_certs(&certs);
    let http = format!(
        "tls_cert = \"{c}/cert.pem\"\ntls_key = \"{c}/key.pem\"\n",
        c = certs.display()
    );
    let s = start("tls", &http, FILES);
    let ca = std::fs::read(certs.join("ca.pem")).expect("ca");
    let body = fixture("device-process-events/process-created.input.json");
    let url = format!("https://127.0.0.1:{}/v1/ingest", s.port);
    let status = common::request("POST", &url, &[], body, Some(&ca))
        .expect("https post")
        .status;
    let plain = common::request("GET", &s.url("/healthz"), &[], Vec::new(), None).is_ok();
    assert_eq!(status, 202, "{}", s.log());
    assert!(!plain, "plain HTTP is not answered on the TLS port");
    assert_eq!(s.file("out/events.leef").lines().count(), 1);
    let _ = std::fs::remove_dir_all(certs);
}

/// Raw HTTP over a fresh connection; the reply's status line and body, or why none came.
fn raw(port: u16, request: &[u8]) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    c.write_all(request).map_err(|e| e.to_string())?;
    let mut reply = String::new();
    c.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    Ok(reply)
}

#[test]
fn slow_and_idle_clients_cannot_hold_the_service() {
    let mut s = start(
        "slowloris",
        "max_connections = 40\nheader_timeout_seconds = 2\nbody_timeout_seconds = 2\n",
        FILES,
    );
    use std::io::Write;
    // The connection `start` probed with has ended.
    std::thread::sleep(Duration::from_millis(300));
    // 60 clients that start a request head and never finish it: 40 take every ingest slot, 20
    // the slots past them that serve health and metrics.
    let mut slow: Vec<std::net::TcpStream> = (0..60)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
            let _ = c.write_all(b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\n");
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Health and metrics still answer; ingest is refused at once with Retry-After.
    let t = Instant::now();
    let health = raw(
        s.port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("health answers");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let busy = raw(
        s.port,
        b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .expect("answered");
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    assert!(busy.to_ascii_lowercase().contains("retry-after"), "{busy}");
    assert!(busy.contains("http.max_connections"), "{busy}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Past every slot (another 40 slow clients), liveness still answers 200, the rest 503.
    let more: Vec<std::net::TcpStream> = (0..40)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
            let _ = c.write_all(b"POST /v1/ingest HTTP/1.1\r\n");
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let health = raw(s.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("answers");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = raw(s.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("answers");
    assert!(metrics.starts_with("HTTP/1.1 503"), "{metrics}");
    drop(more);
    // The header timeout closes the slow ones, and ingest is taken again.
    std::thread::sleep(Duration::from_secs(3));
    for c in &mut slow {
        let _ = c.write_all(b"X-Slow: 1\r\n");
    }
    let body = fixture("device-process-events/process-created.input.json");
    let r = post(&s, "/v1/ingest", &[], &body);
    assert_eq!(r.status, 202, "{}", r.body);
    // A body that trickles in is cut off after body_timeout_seconds with 408.
    let trickle = std::thread::spawn({
        let port = s.port;
        move || {
            use std::io::Read;
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let _ = c.write_all(
                b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n",
            );
            let t = Instant::now();
            for _ in 0..8 {
                if c.write_all(b" ").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            let mut reply = String::new();
            let _ = c.read_to_string(&mut reply);
            (reply, t.elapsed())
        }
    });
    let (reply, took) = trickle.join().expect("trickle");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("http.body_timeout_seconds"), "{reply}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(slow);
    assert_eq!(s.stop(), 0, "{}", s.log());
    assert!(s.log().contains("ingest request refused"), "{}", s.log());
}

#[test]
fn bodies_in_flight_are_bounded_and_refusals_name_the_limit() {
    let s = start(
        "inflight",
        "max_body_bytes = 4000000\nmax_inflight_body_bytes = 8000000\n",
        FILES,
    );
    // Five 3.9 MB bodies at once, each sent slowly enough to overlap: at most two fit.
    let body: Vec<u8> = {
        let mut b = common::records(0, 1).into_bytes();
        b.resize(3_900_000, b' ');
        b
    };
    let workers: Vec<_> = (0..5)
        .map(|_| {
            let (port, body) = (s.port, body.clone());
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
                let head = format!(
                    "POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(head.as_bytes());
                for part in body.chunks(400_000) {
                    if c.write_all(part).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let mut reply = String::new();
                let _ = c.read_to_string(&mut reply);
                reply
            })
        })
        .collect();
    let replies: Vec<String> = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .collect();
    let taken = replies
        .iter()
        .filter(|r| r.starts_with("HTTP/1.1 202"))
        .count();
    let busy: Vec<&String> = replies
        .iter()
        .filter(|r| r.starts_with("HTTP/1.1 503"))
        .collect();
    assert!(taken >= 1 && !busy.is_empty(), "{replies:?}");
    assert!(
        busy.iter()
            .all(|r| r.contains("http.max_inflight_body_bytes")),
        "{busy:?}"
    );
    // The body limit names its key; an empty body, a bare scalar, a BOM and the scheme's case.
    let r = post(&s, "/v1/ingest", &[], &vec![b' '; 4_000_001]);
    assert_eq!(r.status, 413);
    assert!(r.body.contains("http.max_body_bytes"), "{}", r.body);
    assert_eq!(post(&s, "/v1/ingest", &[], b"").status, 400);
    let r = post(&s, "/v1/ingest", &[], b"42");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("object or array"), "{}", r.body);
    let mut bom = "\u{feff}".as_bytes().to_vec();
    bom.extend(fixture("device-process-events/process-created.input.json"));
    let r = post(&s, "/v1/ingest", &[], &bom);
    assert_eq!(r.status, 202, "{}", r.body);
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let token_file = std::env::temp_dir().join(format!("dsm-token-case-{}", std::process::id()));
    std::fs::write(&token_file, "s3cret\n").expect("token");
    let http = format!("bearer_token_file = \"{}\"\n", token_file.display());
    let s = start("bearer-case", &http, FILES);
    let body = fixture("device-process-events/process-created.input.json");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} s3cret");
        let r = post(&s, "/v1/ingest", &[("authorization", &auth)], &body);
        assert_eq!(r.status, 202, "{scheme}: {}", r.body);
    }
    let r = post(
        &s,
        "/v1/ingest",
        &[("authorization", "Basic s3cret")],
        &body,
    );
    assert_eq!(r.status, 401);
    let _ = std::fs::remove_file(token_file);
}

#[test]
fn a_record_without_a_time_of_its_own_is_dated_when_it_was_received() {
    let mut s = start("received-time", "", FILES);
    let before = std::time::SystemTime::now();
    let r = post(
        &s,
        "/v1/ingest",
        &[],
        br#"{"Something":"with no time","id":"x-1"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let leef = s.file("out/events.leef");
    assert!(!leef.contains("Jan  1 00:00:00"), "{leef}");
    assert!(leef.contains("\ttimeSource=received\t"), "{leef}");
    let ecs: serde_json::Value =
        serde_json::from_str(s.file("out/events.ecs.ndjson").trim()).expect("one document");
    assert_eq!(
        ecs["tags"],
        serde_json::json!(["dsm_time_received"]),
        "{ecs}"
    );
    assert_eq!(ecs["@timestamp"], ecs["event"]["ingested"], "{ecs}");
    let year = before
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 31_557_600
        + 1970;
    let stamp = ecs["@timestamp"].as_str().unwrap_or_default();
    // (The year reckoned in 365.25-day years may be one off around New Year.)
    assert!(
        [year - 1, year, year + 1]
            .iter()
            .any(|y| stamp.starts_with(&y.to_string())),
        "{stamp}"
    );
    assert_eq!(s.stop(), 0);
}

/// `serve --config` on `text`, which must stop the start: its stderr.
fn refused_config(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("dsm-badcfg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.toml");
    std::fs::write(&path, text.replace("$DIR", &dir.display().to_string())).expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .output()
        .expect("serve");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{name} must stop the start: {err}"
    );
    assert!(err.contains("bad.toml"), "{name}: the file is named: {err}");
    let _ = std::fs::remove_dir_all(dir);
    err
}

#[test]
fn mistakes_and_secrets_in_the_config_stop_the_start_loudly_and_stay_unprinted() {
    let port = free_port();
    let http = format!("[http]\nlisten = \"127.0.0.1:{port}\"\n");
    // A misspelled family or category would keep events out (or let none in) unseen.
    let err = refused_config(
        "family",
        &format!("{http}[[outputs]]\nname = \"f\"\ntype = \"file\"\npath = \"$DIR/o\"\ninclude_families = [\"device-proces-events\"]\n"),
    );
    assert!(
        err.contains("outputs[0] (f).include_families: `device-proces-events`"),
        "{err}"
    );
    let err = refused_config(
        "category",
        &format!("{http}[[outputs]]\nname = \"f\"\ntype = \"file\"\npath = \"$DIR/o\"\nexclude_categories = [\"DeviceProcessEvent\"]\n"),
    );
    assert!(
        err.contains("exclude_categories: `DeviceProcessEvent`"),
        "{err}"
    );
    // TLS material is read at start.
    let err = refused_config(
        "tls-ca",
        &format!("{http}[[outputs]]\nname = \"q\"\ntype = \"syslog\"\nurl = \"tls://127.0.0.1:6514\"\ntls_ca = \"$DIR/missing-ca.pem\"\n"),
    );
    assert!(
        err.contains("outputs (q)") && err.contains("missing-ca.pem"),
        "{err}"
    );
    // A secret written where it does not belong is not echoed back.
    let err = refused_config("secret", &format!("{http}password = \"hunter2-s3cret\"\n"));
    assert!(
        err.contains("line 3, column 1") && err.contains("password"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    // An empty token would start a service that refuses everything.
    let err = refused_config(
        "empty-token",
        &format!("{http}bearer_token_file = \"/dev/null\"\n"),
    );
    assert!(
        err.contains("http.bearer_token: /dev/null is empty"),
        "{err}"
    );
    // A bad listen address names the key.
    let err = refused_config("listen", "[http]\nlisten = \"127.0.0.1:99999\"\n");
    assert!(err.contains("http.listen"), "{err}");
}

#[test]
fn a_world_readable_token_file_is_used_and_warned_about() {
    let token_file = std::env::temp_dir().join(format!("dsm-token-open-{}", std::process::id()));
    std::fs::write(&token_file, "t0ken\n").expect("token");
    let ok = Command::new("chmod")
        .arg("0644")
        .arg(&token_file)
        .status()
        .expect("chmod");
    assert!(ok.success());
    let http = format!("bearer_token_file = \"{}\"\n", token_file.display());
    let mut s = start("open-token", &http, FILES);
    let r = post(
        &s,
        "/v1/ingest",
        &[("authorization", "Bearer t0ken")],
        &fixture("device-process-events/process-created.input.json"),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(s.stop(), 0);
    assert!(
        s.log()
            .contains("a secret file every user of this host may read"),
        "{}",
        s.log()
    );
    assert!(!s.log().contains("t0ken"), "{}", s.log());
    let _ = std::fs::remove_file(token_file);
}
