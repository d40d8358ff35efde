//! The `_bulk` output against osmem-server (PyPI), an in-memory OpenSearch-API server: every
//! fixture's events indexed into their data streams and searchable, and a second delivery of
//! the same events stored once (409 counts as delivered).
//!
//! Needs osmem-server: `.ci/run` installs it (`pip install osmem-server==0.1.6`) and runs this
//! with `--ignored`; the binary is found through `OSMEM_SERVER` or the Python package.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_defender-dsm");

struct Osmem {
    child: Child,
    url: String,
}

impl Drop for Osmem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn osmem_binary() -> PathBuf {
    if let Ok(p) = std::env::var("OSMEM_SERVER") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, osmem_server; print(os.path.join(os.path.dirname(osmem_server.__file__), 'bin', 'osmem-server'))",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "osmem-server is not installed (pip install osmem-server==0.1.6)"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn start_osmem() -> Osmem {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let child = Command::new(osmem_binary())
        .args(["-addr", &format!("127.0.0.1:{port}"), "-no-stdin-watch"])
        .stdout(Stdio::null())
        .spawn()
        .expect("osmem-server");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "osmem-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Osmem { child, url }
}

fn http(method: &str, url: &str, body: Option<serde_json::Value>) -> serde_json::Value {
    let headers: &[(&str, &str)] = if body.is_some() {
        &[("content-type", "application/json")]
    } else {
        &[]
    };
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let reply = common::request(method, url, headers, body, None).expect("request");
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{url}: {e}: {}", reply.body))
}

fn fixture_inputs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut inputs = Vec::new();
    for family in std::fs::read_dir(root).expect("fixtures") {
        for f in std::fs::read_dir(family.expect("entry").path()).expect("family") {
            let p = f.expect("entry").path();
            if p.to_string_lossy().ends_with(".input.json") {
                inputs.push(p);
            }
        }
    }
    inputs.sort();
    inputs
}

/// How many ECS documents `translate --format ecs` makes of the inputs.
fn ecs_documents(inputs: &[PathBuf]) -> u64 {
    let out = Command::new(BIN)
        .arg("translate")
        .arg("--format=ecs")
        .args(inputs)
        .output()
        .expect("translate");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).lines().count() as u64
}

#[test]
#[ignore = "needs osmem-server (.ci/run installs it and runs this with --ignored)"]
fn every_fixture_event_is_indexed_once_and_searchable() {
    let os = start_osmem();
    let inputs = fixture_inputs();
    let total = ecs_documents(&inputs);
    let data = std::env::temp_dir().join(format!("dsm-osmem-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let send = || {
        let out = Command::new(BIN)
            .arg("translate")
            .arg(format!("--bulk={}", os.url))
            .arg(format!("--data-dir={}", data.display()))
            .args(&inputs)
            .output()
            .expect("translate --bulk");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = send();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("{total} events delivered")), "{err}");

    let count = |index: &str| {
        http("GET", &format!("{}/{index}/_count", os.url), None)["count"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(count("logs-*"), total);
    assert!(count("logs-m365_defender.event-default") > 0);
    assert!(count("logs-m365_defender.alert-default") > 0);
    assert!(count("logs-m365_defender.vulnerability-default") > 0);

    // Searchable by an ECS field our mappings set.
    let found = http(
        "POST",
        &format!("{}/logs-*/_search", os.url),
        Some(serde_json::json!({"query": {"term": {"event.action": "processcreated"}}})),
    );
    let hits = found["hits"]["hits"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!hits.is_empty(), "{found}");
    assert!(hits
        .iter()
        .all(|h| h["_source"]["event"]["action"] == "processcreated"));
    assert!(hits
        .iter()
        .all(|h| h["_id"].as_str().is_some_and(|id| id.len() == 32)));

    // Delivered again (a replay, an input read twice): stored once.
    let (code, err) = send();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("{total} already stored (409)")),
        "{err}"
    );
    assert_eq!(count("logs-*"), total);
    let _ = std::fs::remove_dir_all(data);
}

#[test]
#[ignore = "needs osmem-server (.ci/run installs it and runs this with --ignored)"]
fn setup_elastic_types_the_fields_and_a_second_run_changes_nothing() {
    let os = start_osmem();
    let setup = || {
        let out = Command::new(BIN)
            // osmem-server has no data streams.
            .args(["setup", "elastic", "--plain-indices", "--url", &os.url])
            .output()
            .expect("setup elastic");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = setup();
    // osmem-server has no ISM plugin: the templates go in, the missing retention is reported.
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("index template defender-dsm-logs-m365_defender.event: Created"),
        "{err}"
    );
    assert!(err.contains("no ISM plugin"), "{err}");
    let (_, again) = setup();
    assert!(
        !again.contains("Created") && !again.contains("Updated"),
        "{again}"
    );
    assert!(again.contains("m365_defender.event: Unchanged"), "{again}");

    // Every fixture's events go in under the typed templates (none refused), and the network
    // events arrive typed: `source.ip` is an ip field.
    let inputs = fixture_inputs();
    let total = ecs_documents(&inputs);
    let out = Command::new(BIN)
        .arg("translate")
        .arg(format!("--bulk={}", os.url))
        .args(&inputs)
        .output()
        .expect("translate --bulk");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("{total} events delivered")), "{err}");
    let mapping = http(
        "GET",
        &format!("{}/logs-m365_defender.event-default/_mapping", os.url),
        None,
    );
    assert!(
        mapping.to_string().contains("\"ip\":{\"type\":\"ip\"}"),
        "{mapping}"
    );
    let found = http(
        "POST",
        &format!("{}/logs-m365_defender.event-default/_search", os.url),
        Some(serde_json::json!({"query": {"term": {"source.ip": "10.0.0.0/8"}}})),
    );
    assert!(
        found["hits"]["total"]["value"].as_u64().unwrap_or(0) >= 1,
        "a CIDR query on an ip field: {found}"
    );
    // A value that is not an address is refused by the template.
    let bad = "{\"create\":{\"_index\":\"logs-m365_defender.event-default\",\"_id\":\"bad\"}}\n{\"@timestamp\":\"2026-10-14T00:00:00Z\",\"source\":{\"ip\":\"not-an-ip\"}}\n";
    let reply = common::request(
        "POST",
        &format!("{}/_bulk", os.url),
        &[("content-type", "application/x-ndjson")],
        bad.as_bytes().to_vec(),
        None,
    )
    .expect("bulk");
    let v: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(v["items"][0]["create"]["status"], 400, "{v}");
}

#[test]
#[ignore = "needs osmem-server (.ci/run installs it and runs this with --ignored)"]
fn serve_sets_the_cluster_up_at_start_and_checks_for_elastics_integration() {
    let os = start_osmem();
    let bulk = format!(
        r#"[[outputs]]
name = "opensearch"
type = "bulk"
url = "{}"
setup = true
retention_days = 3
plain_indices = true
elastic_integration = true
"#,
        os.url
    );
    let mut serve = common::ServeProcess::new("osmem-setup", &bulk);
    serve.spawn();
    serve.stop();
    let log = serve.log();
    assert!(
        log.contains("defender-dsm-logs-m365_defender.event: Created"),
        "{log}"
    );
    assert!(log.contains("no ISM plugin"), "{log}");
    assert!(log.contains("integration is not installed"), "{log}");
    let t = http(
        "GET",
        &format!(
            "{}/_index_template/defender-dsm-logs-m365_defender.alert",
            os.url
        ),
        None,
    );
    assert_eq!(
        t["index_templates"][0]["index_template"]["index_patterns"][0],
        "logs-m365_defender.alert-*"
    );
}
