//! The Event Hubs AMQP consumer through the real Azure SDK code path: Microsoft's event
//! processor and blob checkpoint store, against Azurite (the blob store) and a local AMQP
//! stand-in of the Event Hubs service (`eventhubs_standin/eventhubs_amqp.py`,
//! python-qpid-proton), signing in with a client secret at the Entra stand-in. Two instances
//! split four partitions and write their checkpoints to Azurite; one is killed and the other
//! takes its partitions over; a restarted instance resumes from the checkpoints; no record is
//! lost and only the at-least-once window comes twice (counted by record id).
//!
//! Needs Azurite (`AZURITE`: the `azurite-blob` script of npm `azurite@3.35.0`) and Python with
//! `python-qpid-proton==0.40.0` and `azure-storage-blob==12.31.1`: `.ci/run` installs them and
//! runs these with `--ignored`.

mod common;
mod msapi_standin;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ServeProcess;
use msapi_standin::{Data, Faults, MsApi};

const STANDIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/eventhubs_standin/eventhubs_amqp.py"
);
const CONTAINER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/eventhubs_standin/azurite_container.py"
);
const HUB: &str = "insights-logs-advancedhunting-deviceprocessevents";
const SECRET: &str = "s3cret";

/// A child process stopped when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `done`; on a timeout, the instances' logs tell why.
fn wait_until(what: &str, secs: u64, logs: &[&ServeProcess], done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        if Instant::now() > deadline {
            let logs: Vec<String> = logs.iter().map(|s| s.log()).collect();
            panic!("timed out waiting for {what}:\n{}", logs.join("\n---\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Azurite's blob service on a free port, data in `dir`; its account URL.
fn start_azurite(dir: &Path) -> (Peer, String) {
    azurite_on(dir, free_port())
}

fn azurite_on(dir: &Path, port: u16) -> (Peer, String) {
    let bin = std::env::var("AZURITE").unwrap_or_else(|_| "azurite-blob".into());
    let child = Command::new(&bin)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(dir)
        .args(["--silent", "--skipApiVersionCheck"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e} (npm install azurite@3.35.0; set AZURITE)"));
    let peer = Peer(child);
    wait_port(port, "azurite");
    (peer, format!("http://127.0.0.1:{port}/devstoreaccount1"))
}

fn container(account: &str, name: &str, list: bool) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg(CONTAINER).arg(account).arg(name);
    if list {
        cmd.arg("--list");
    }
    let out = cmd.output().expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The Event Hubs stand-in, serving the messages appended to `messages`.
fn start_eventhubs(messages: &Path) -> (Peer, String) {
    let port = free_port();
    let child = Command::new("python3")
        .arg(STANDIN)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--messages")
        .arg(messages)
        .args(["--partitions", "4"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(messages.with_extension("log")).expect("log"))
        .spawn()
        .expect("python3 (pip install python-qpid-proton==0.40.0)");
    let peer = Peer(child);
    wait_port(port, "the Event Hubs stand-in");
    (peer, format!("amqp://127.0.0.1:{port}"))
}

/// Appends messages `from..from + n` (10 records each), spread over the 4 partitions.
fn produce(messages: &Path, from: u64, n: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(messages)
        .expect("messages");
    for i in from..from + n {
        let line = serde_json::json!({
            "hub": HUB,
            "partition": (i % 4).to_string(),
            "body": common::records(i * 10, 10),
        });
        writeln!(f, "{line}").expect("write");
    }
}

fn produce_raw(messages: &Path, partition: &str, body: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(messages)
        .expect("messages");
    let line = serde_json::json!({"hub": HUB, "partition": partition, "body": body});
    writeln!(f, "{line}").expect("write");
}

/// A `serve` instance reading the hub, checkpointing into the SAS container. `name` is unique
/// across the tests (it names the instance's directory).
fn instance(name: &str, endpoint: &str, sas: &str, api: &MsApi, expiry: u64) -> ServeProcess {
    let config = format!(
        r#"[[eventhubs]]
name = "stream"
namespace = "contoso-defender.servicebus.windows.net"
hubs = ["{HUB}"]
endpoint = "{endpoint}"
checkpoint_sas_url_file = "{{dir}}/sas"
instance_id = "{name}"
balance_seconds = 1
ownership_expiry_seconds = {expiry}
credential = {{ kind = "client-secret", tenant_id = "3f1e7a52-9c0d-4b8e-a1f3-5d2c7e9b4a10", client_id = "app", client_secret_file = "{{dir}}/secret", authority = "{authority}" }}
"#,
        authority = api.url
    );
    let mut p = ServeProcess::new(&format!("amqp-{name}"), &config);
    std::fs::write(p.dir.join("sas"), sas).expect("sas");
    std::fs::write(p.dir.join("secret"), SECRET).expect("secret");
    p.spawn();
    p
}

fn union(a: &ServeProcess, b: &ServeProcess) -> BTreeSet<String> {
    a.ids().into_iter().chain(b.ids()).collect()
}

struct Peers {
    azurite: Peer,
    _eventhubs: Peer,
    account: String,
    endpoint: String,
    sas: String,
    messages: PathBuf,
    api: MsApi,
    dir: PathBuf,
}

impl Drop for Peers {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.messages.with_extension("log"));
            eprintln!("the Event Hubs stand-in said: {}", log.unwrap_or_default());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn peers(name: &str) -> Peers {
    let dir = std::env::temp_dir().join(format!("dsm-amqp-peers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("azurite")).expect("dir");
    let (azurite, account) = start_azurite(&dir.join("azurite"));
    let sas = container(&account, "checkpoints", false);
    let messages = dir.join("messages.ndjson");
    std::fs::write(&messages, "").expect("messages");
    let (eventhubs, endpoint) = start_eventhubs(&messages);
    let api = MsApi::start(
        Data::default(),
        Faults::default(),
        SECRET,
        Duration::from_secs(3600),
    );
    Peers {
        azurite,
        _eventhubs: eventhubs,
        account,
        endpoint,
        sas,
        messages,
        api,
        dir,
    }
}

#[test]
#[ignore = "needs Azurite and python-qpid-proton (.ci/run installs them and runs this with --ignored)"]
fn two_processors_split_the_partitions_and_resume_from_blob_checkpoints() {
    let p = peers("two");
    produce(&p.messages, 0, 80);
    produce_raw(&p.messages, "2", "{\"records\":[{\"category\":");
    let mut a = instance("proc-a", &p.endpoint, &p.sas, &p.api, 5);
    let mut b = instance("proc-b", &p.endpoint, &p.sas, &p.api, 5);
    wait_until("the first 800 records", 120, &[&a, &b], || {
        union(&a, &b).len() >= 800
    });
    // Balanced: each instance owns two of the four partitions.
    wait_until("both instances reading", 60, &[&a, &b], || {
        !a.ids().is_empty() && !b.ids().is_empty()
    });

    // Checkpoints and ownerships are in the blob store, as the SDK lays them out.
    wait_until("4 checkpoints and 4 ownerships", 30, &[&a, &b], || {
        let blobs: serde_json::Value =
            serde_json::from_str(&container(&p.account, "checkpoints", true)).expect("json");
        let prefix = format!("contoso-defender.servicebus.windows.net/{HUB}/$Default");
        let count = |kind: &str| {
            blobs
                .as_object()
                .map(|o| {
                    o.keys()
                        .filter(|k| k.starts_with(&format!("{prefix}/{kind}/")))
                        .count()
                })
                .unwrap_or(0)
        };
        count("checkpoint") == 4 && count("ownership") == 4
    });

    // The malformed message is dead-lettered with its place, and the partition moved on.
    let letters: Vec<serde_json::Value> = [&a, &b]
        .iter()
        .filter_map(|s| {
            std::fs::read_to_string(s.dir.join("data/dead-letters/input-stream.ndjson")).ok()
        })
        .flat_map(|t| {
            t.lines()
                .map(|l| serde_json::from_str(l).expect("letter"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["hub"], HUB);
    assert_eq!(letters[0]["partition"], "2");
    assert_eq!(letters[0]["position"], 20, "{}", letters[0]);

    // A dies without letting go; once its ownerships expire, B takes its partitions over from
    // the checkpoints.
    a.kill9();
    produce(&p.messages, 80, 40);
    wait_until("all 1200 records", 120, &[&b], || {
        union(&a, &b).len() >= 1200
    });

    // Lag is measured per partition and reaches 0; nothing is stalled.
    wait_until("lag 0 on B's 4 partitions", 60, &[&b], || {
        let m = b.metrics();
        (0..4).all(|part| {
            m.contains(&format!(
                "dsm_eventhub_lag{{input=\"stream\",hub=\"{HUB}\",partition=\"{part}\"}} 0\n"
            ))
        })
    });
    assert!(
        b.metrics()
            .lines()
            .filter(|l| l.starts_with("dsm_eventhub_stalled{"))
            .all(|l| l.ends_with(" 0")),
        "{}",
        b.metrics()
    );

    // B stops cleanly (a final checkpoint); A comes back alone and resumes from the
    // checkpoints: only the new messages come.
    b.stop();
    let before = a.ids().len() + b.ids().len();
    produce(&p.messages, 120, 8);
    a.spawn();
    wait_until("all 1280 records", 120, &[&a], || {
        union(&a, &b).len() >= 1280
    });
    a.stop();
    let after = a.ids().len() + b.ids().len();
    assert_eq!(
        after - before,
        80,
        "the restarted instance read again what was checkpointed: {}",
        a.log()
    );

    let total = a.ids().len() + b.ids().len();
    let distinct = union(&a, &b).len();
    assert_eq!(distinct, 1280);
    // At least once: what A had taken but not checkpointed when killed (up to a second of
    // messages per partition, and those in flight) came twice.
    assert!(
        total - distinct <= 4 * 20 * 10,
        "{} duplicates",
        total - distinct
    );
}

#[test]
#[ignore = "needs Azurite and python-qpid-proton (.ci/run installs them and runs this with --ignored)"]
fn a_refused_token_is_reported_and_nothing_is_read() {
    let p = peers("refused");
    produce(&p.messages, 0, 4);
    let mut a = ServeProcess::new(
        "amqp-refused",
        &format!(
            r#"[[eventhubs]]
name = "stream"
namespace = "contoso-defender.servicebus.windows.net"
hubs = ["{HUB}"]
endpoint = "{}"
checkpoint_sas_url_file = "{{dir}}/sas"
credential = {{ kind = "client-secret", tenant_id = "3f1e7a52-9c0d-4b8e-a1f3-5d2c7e9b4a10", client_id = "app", client_secret_file = "{{dir}}/secret", authority = "{}" }}
"#,
            p.endpoint, p.api.url
        ),
    );
    std::fs::write(a.dir.join("sas"), &p.sas).expect("sas");
    std::fs::write(a.dir.join("secret"), "wrong").expect("secret");
    a.spawn();
    wait_until("the sign-in failure counted", 60, &[&a], || {
        a.metrics()
            .contains("dsm_eventhub_errors_total{input=\"stream\"}")
    });
    assert!(a.ids().is_empty());
    assert!(*p.api.shared.token_requests.lock().expect("count") > 0);
    assert!(
        a.log()
            .contains("check the tenant id, client id and secret"),
        "{}",
        a.log()
    );
    a.stop();
}

#[test]
#[ignore = "needs Azurite and python-qpid-proton (.ci/run installs them and runs this with --ignored)"]
fn a_checkpoint_store_outage_loses_nothing() {
    let mut p = peers("outage");
    produce(&p.messages, 0, 40);
    let mut a = instance("outage-a", &p.endpoint, &p.sas, &p.api, 5);
    wait_until("the first 400 records", 120, &[&a], || a.ids().len() >= 400);
    // The blob store goes away: checkpoints and ownership renewals fail, the processor is
    // reopened until the store is back, and reading resumes from the last checkpoints.
    let port: u16 = p
        .account
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .and_then(|n| n.parse().ok())
        .expect("port");
    let _ = p.azurite.0.kill();
    let _ = p.azurite.0.wait();
    produce(&p.messages, 40, 40);
    wait_until("the outage noticed", 60, &[&a], || {
        a.metrics()
            .contains("dsm_eventhub_errors_total{input=\"stream\"}")
    });
    p.azurite = azurite_on(&p.dir.join("azurite"), port).0;
    produce(&p.messages, 80, 40);
    wait_until("all 1200 records", 180, &[&a], || {
        a.ids().iter().collect::<BTreeSet<_>>().len() >= 1200
    });
    a.stop();
    assert_eq!(a.ids().iter().collect::<BTreeSet<_>>().len(), 1200);
}

#[test]
#[ignore = "needs Azurite and python-qpid-proton (.ci/run installs them and runs this with --ignored)"]
fn a_stopped_instance_gives_its_partitions_up_at_once() {
    let p = peers("handover");
    produce(&p.messages, 0, 40);
    // Ownerships expire only after 120 s: a takeover sooner than that is the hand-over.
    let mut a = instance("handover-a", &p.endpoint, &p.sas, &p.api, 120);
    let mut b = instance("handover-b", &p.endpoint, &p.sas, &p.api, 120);
    wait_until("both instances reading", 60, &[&a, &b], || {
        union(&a, &b).len() >= 400 && !a.ids().is_empty() && !b.ids().is_empty()
    });
    b.stop();
    assert!(b.log().contains("partitions given up"), "{}", b.log());
    produce(&p.messages, 40, 40);
    let since = Instant::now();
    wait_until("A reading all four partitions", 60, &[&a], || {
        union(&a, &b).len() >= 800
    });
    assert!(
        since.elapsed() < Duration::from_secs(60),
        "{:?}",
        since.elapsed()
    );
    a.stop();
    assert_eq!(union(&a, &b).len(), 800);
}
