//! `serve` polling one tenant through every feed against the Microsoft API stand-in
//! (tests/msapi_standin): every seeded Graph alert and incident, Defender for Endpoint alert,
//! SIEM detection and vulnerability row reaches the output exactly once, across throttling, a
//! burst of server errors, a token expiry and a restart of the service while paging.

mod common;
mod msapi_standin;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::ServeProcess;
use defender_dsm::mapping::time::Timestamp;
use msapi_standin::{Data, Faults, MsApi};
use serde_json::Value;

fn fixture(path: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(path);
    serde_json::from_str(&std::fs::read_to_string(p).expect("fixture")).expect("json")
}

/// An ISO time `secs` seconds before now.
fn ago(secs: u64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock");
    Timestamp::from_unix_nanos((now.as_nanos() as i64) - (secs as i64) * 1_000_000_000).iso_millis()
}

fn seed(alerts: usize, incidents: usize, mde: usize, siem: usize) -> Data {
    let alert = fixture("graph-alert/execution-alert-page.input.json")["value"][0].clone();
    let incident = fixture("graph-incident/expanded-alerts-page.input.json")["value"][0].clone();
    let mde_alert = fixture("mde-alert/process-and-user-evidence.input.json")["value"][0].clone();
    let detection = fixture("siem-alert/edr-and-av-key-drift.input.json")[0].clone();
    let bundle = fixture("vulnerability/joined-bundle.input.json");
    let mut d = Data::default();
    for i in 0..alerts {
        let mut a = alert.clone();
        a["id"] = Value::String(format!("da-{i:04}"));
        a["lastUpdateDateTime"] = Value::String(ago(7200 - i as u64));
        d.graph_alerts.push(a);
    }
    for i in 0..incidents {
        let mut inc = incident.clone();
        inc["id"] = Value::String(format!("{}", 5000 + i));
        inc["lastUpdateDateTime"] = Value::String(ago(7000 - i as u64));
        let mut one = inc["alerts"][0].clone();
        one["id"] = Value::String(format!("inc-alert-{i}"));
        inc["alerts"] = Value::Array(vec![one]);
        d.incidents.push(inc);
    }
    for i in 0..mde {
        let mut a = mde_alert.clone();
        a["id"] = Value::String(format!("mde-{i:03}"));
        a["lastUpdateTime"] = Value::String(ago(6000 - i as u64));
        let first = a["evidence"][0].clone();
        a["evidence"] = Value::Array(vec![first]);
        d.mde_alerts.push(a);
    }
    for i in 0..siem {
        let mut det = detection.clone();
        det["FullId"] = Value::String(format!("siem-{i}:x"));
        det["LastProcessedTimeUtc"] = Value::String(ago(5000 - i as u64));
        d.siem.push(det);
    }
    d.vulnerabilities = bundle["vulnerabilities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    d.machines = bundle["machines"].as_array().cloned().unwrap_or_default();
    d.machine_vulnerabilities = bundle["machinesVulnerabilities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    d
}

struct Service(ServeProcess);

impl std::ops::Deref for Service {
    type Target = ServeProcess;
    fn deref(&self) -> &ServeProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Service {
    fn deref_mut(&mut self) -> &mut ServeProcess {
        &mut self.0
    }
}

impl Service {
    fn new(name: &str, api: &MsApi, feeds: &str) -> Service {
        let tenant = format!(
            r#"[[tenants]]
name = "contoso"
tenant_id = "3f1e7a52-9c0d-4b8e-a1f3-5d2c7e9b4a10"
client_id = "app"
client_secret_file = "{{dir}}/secret"
authority = "{u}"
graph_url = "{u}"
mde_url = "{u}"
siem_url = "{u}"
feeds = [{feeds}]
interval_seconds = 1
requests_per_minute = 6000
graph_alerts_top = 25
incidents_top = 10
mde_top = 8
attempts = 6
"#,
            u = api.url
        );
        let p = ServeProcess::new(&format!("poll-{name}"), &tenant);
        std::fs::write(p.dir.join("secret"), "s3cret\n").expect("secret");
        Service(p)
    }

    fn start(&mut self) {
        self.0.spawn();
    }

    /// Events by LEEF `cat`, and whether every dsmId is distinct.
    fn by_category(&self) -> (BTreeMap<String, usize>, bool) {
        let lines = self.lines();
        let mut cats = BTreeMap::new();
        let mut ids = BTreeSet::new();
        for l in &lines {
            let cat = l
                .split("cat=")
                .nth(1)
                .and_then(|r| r.split('\t').next())
                .unwrap_or("?")
                .to_string();
            *cats.entry(cat).or_default() += 1;
            ids.insert(l.rsplit("dsmId=").next().unwrap_or_default().to_string());
        }
        (cats, ids.len() == lines.len())
    }

    fn wait_for(&self, done: impl Fn(&BTreeMap<String, usize>) -> bool, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(&self.by_category().0) {
            assert!(
                Instant::now() < deadline,
                "timed out: {:?}\n{}",
                self.by_category().0,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

const ALL_FEEDS: &str =
    r#""graph-alerts", "graph-incidents", "mde-alerts", "mde-vulnerabilities", "siem-alerts""#;

#[test]
fn every_seeded_item_arrives_once_across_faults_and_a_restart_while_paging() {
    let faults = Faults {
        throttle: [2, 9, 20].into(),
        server_error: [5, 6, 7].into(),
        revoke: [12].into(),
        ..Faults::default()
    };
    let api = MsApi::start(
        seed(120, 30, 20, 10),
        faults,
        "s3cret",
        Duration::from_secs(4),
    );
    // Slow pages, so that the restart comes while the alerts are still being paged.
    *api.shared.delay_ms.lock().expect("delay") = 60;
    let mut svc = Service::new("all", &api, ALL_FEEDS);
    svc.start();
    svc.wait_for(|c| c.get("GraphAlert").copied().unwrap_or(0) >= 25, 60);
    svc.stop();
    let (at_restart, _) = svc.by_category();
    assert!(
        at_restart.get("GraphAlert").copied().unwrap_or(0) < 120,
        "{at_restart:?}"
    );
    *api.shared.delay_ms.lock().expect("delay") = 0;
    svc.start();
    let want: BTreeMap<String, usize> = [
        ("GraphAlert", 120),
        ("incident", 30),
        ("DefenderForEndpointAlert", 20),
        ("SiemApiAlert", 10),
        ("Vulnerability", 4),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    svc.wait_for(|c| *c == want, 60);
    // A few more sweeps over the overlap window bring nothing again.
    std::thread::sleep(Duration::from_secs(3));
    svc.stop();
    let (cats, distinct) = svc.by_category();
    assert_eq!(cats, want, "{}", svc.log());
    assert!(distinct, "every event once");
    // The tenant travels into events whose API does not say it.
    for (cat, n) in [("SiemApiAlert", 10), ("Vulnerability", 4)] {
        let lines: Vec<String> = svc
            .lines()
            .into_iter()
            .filter(|l| l.contains(&format!("cat={cat}\t")))
            .collect();
        assert_eq!(lines.len(), n, "{cat}");
        assert!(
            lines
                .iter()
                .all(|l| l.contains("\tTenantId=3f1e7a52-9c0d-4b8e-a1f3-5d2c7e9b4a10")),
            "{cat}: {lines:?}"
        );
    }
    let requests = api.shared.requests.lock().expect("requests").clone();
    assert!(
        requests.len() > 21,
        "the scripted faults were reached: {}",
        requests.len()
    );
    assert!(
        *api.shared.token_requests.lock().expect("tokens") >= 3,
        "tokens were renewed"
    );
    assert!(
        std::fs::read_dir(svc.dir.join("data/cursors"))
            .expect("cursors")
            .count()
            >= 5
    );
}

#[test]
fn incidents_fall_back_without_expand_and_alert_updates_come_again_marked() {
    let faults = Faults {
        expand_fails: true,
        ..Faults::default()
    };
    let api = MsApi::start(
        seed(3, 2, 0, 0),
        faults,
        "s3cret",
        Duration::from_secs(3600),
    );
    let mut svc = Service::new("update", &api, r#""graph-alerts", "graph-incidents""#);
    svc.start();
    svc.wait_for(
        |c| c.get("GraphAlert") == Some(&3) && c.get("incident") == Some(&2),
        60,
    );
    // An analyst resolves alert 1: it changes, and comes again as an update.
    {
        let mut d = api.shared.data.lock().expect("data");
        d.graph_alerts[1]["status"] = Value::String("resolved".into());
        d.graph_alerts[1]["lastUpdateDateTime"] = Value::String(ago(1));
    }
    svc.wait_for(|c| c.get("GraphAlert") == Some(&4), 30);
    std::thread::sleep(Duration::from_secs(2));
    svc.stop();
    let lines = svc.lines();
    let updates: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\tAlertUpdated=true"))
        .collect();
    assert_eq!(updates.len(), 1, "{lines:#?}");
    assert!(updates[0].contains("da-0001"), "{}", updates[0]);
    assert_eq!(svc.by_category().0.get("GraphAlert"), Some(&4));
    let requests = api.shared.requests.lock().expect("requests").clone();
    assert!(
        requests.iter().any(|r| r == "incidents expand=false"),
        "{requests:?}"
    );
    assert!(svc.log().contains("without $expand"), "{}", svc.log());
}

#[test]
fn a_missing_permission_is_named_and_other_feeds_go_on() {
    let faults = Faults {
        forbidden: ["incidents expand=true".to_string()].into(),
        ..Faults::default()
    };
    let api = MsApi::start(seed(2, 1, 0, 0), faults, "s3cret", Duration::from_secs(60));
    let mut svc = Service::new("forbidden", &api, r#""graph-alerts", "graph-incidents""#);
    svc.start();
    svc.wait_for(|c| c.get("GraphAlert") == Some(&2), 30);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !svc.log().contains("SecurityIncident.Read.All") {
        assert!(Instant::now() < deadline, "{}", svc.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    svc.stop();
    assert!(svc.log().contains("403 Forbidden"), "{}", svc.log());
    assert_eq!(svc.by_category().0.get("incident"), None);
}

#[test]
fn a_wrong_secret_is_reported_and_nothing_is_lost() {
    let api = MsApi::start(
        seed(2, 0, 0, 0),
        Faults::default(),
        "other",
        Duration::from_secs(60),
    );
    let mut svc = Service::new("secret", &api, r#""graph-alerts""#);
    svc.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !svc.log().contains("invalid_client") {
        assert!(Instant::now() < deadline, "{}", svc.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    svc.stop();
    assert!(
        svc.log()
            .contains("check the tenant id, client id and secret"),
        "{}",
        svc.log()
    );
    assert!(svc.lines().is_empty());
}

#[test]
fn between_full_syncs_the_vulnerability_changes_come_once() {
    let api = MsApi::start(
        seed(0, 0, 0, 0),
        Faults::default(),
        "s3cret",
        Duration::from_secs(3600),
    );
    let mut svc = Service::new("delta", &api, r#""mde-vulnerabilities""#);
    svc.start();
    svc.wait_for(|c| c.get("Vulnerability") == Some(&4), 30);
    // A device fixes a CVE: the change appears in the delta export.
    let mut row = fixture("mde-vulnerability/delta-page-camel-case.input.json")["value"][0].clone();
    row["eventTimestamp"] = Value::String(ago(1));
    row["status"] = Value::String("Fixed".into());
    api.shared.data.lock().expect("data").changes.push(row);
    svc.wait_for(|c| c.get("SoftwareVulnerability") == Some(&1), 30);
    std::thread::sleep(Duration::from_secs(3));
    svc.stop();
    let (cats, distinct) = svc.by_category();
    assert_eq!(
        cats.get("SoftwareVulnerability"),
        Some(&1),
        "once: {cats:?}"
    );
    assert_eq!(
        cats.get("Vulnerability"),
        Some(&4),
        "one full sync: {cats:?}"
    );
    assert!(distinct);
    let requests = api.shared.requests.lock().expect("requests").clone();
    assert!(
        requests.iter().filter(|r| *r == "changes").count() >= 2,
        "{requests:?}"
    );
}

#[test]
fn a_saved_next_link_that_graph_refuses_restarts_the_sweep_from_the_cursor() {
    let api = MsApi::start(
        seed(120, 0, 0, 0),
        Faults::default(),
        "s3cret",
        Duration::from_secs(60),
    );
    // Slow pages, so that the stop comes while the alerts are being paged and a next link is
    // saved with the cursor.
    *api.shared.delay_ms.lock().expect("delay") = 60;
    let mut svc = Service::new("expired-link", &api, r#""graph-alerts""#);
    svc.start();
    svc.wait_for(|c| c.get("GraphAlert").copied().unwrap_or(0) >= 25, 60);
    svc.stop();
    let (at_stop, _) = svc.by_category();
    assert!(
        at_stop.get("GraphAlert").copied().unwrap_or(0) < 120,
        "{at_stop:?}"
    );
    // The skip tokens issued so far expire.
    *api.shared.link_generation.lock().expect("generation") += 1;
    *api.shared.delay_ms.lock().expect("delay") = 0;
    svc.start();
    svc.wait_for(|c| c.get("GraphAlert").copied().unwrap_or(0) >= 120, 60);
    std::thread::sleep(Duration::from_secs(2));
    svc.stop();
    let (cats, distinct) = svc.by_category();
    assert_eq!(cats.get("GraphAlert"), Some(&120), "{}", svc.log());
    assert!(distinct, "every alert once");
    assert!(
        svc.log().contains("the saved next link was refused"),
        "{}",
        svc.log()
    );
}
