//! `KafkaInput`: the Defender Streaming API through Event Hubs' Kafka endpoint (Standard tier
//! and above), with librdkafka (`rdkafka`, bundled).
//!
//! Each message is an Event Hubs body (`{"records":[...]}`) and goes to the pipeline alone; its
//! offset is committed only once every output has its events (sent or spooled), so a crash or a
//! rebalance sends at most the uncommitted messages again (at least once; record ids make the
//! duplicates harmless downstream). A body that is not JSON goes to the input's dead letters
//! with its topic, partition and offset, and the partition moves on. Instances with the same
//! consumer group split the partitions; when one leaves, the others take over from the
//! committed offsets.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::pipeline::{IngestError, Pipeline};

/// Where to consume from.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub name: String,
    pub brokers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    /// The namespace connection string: SASL_SSL with PLAIN, user `$ConnectionString`, as
    /// Event Hubs expects. None: plaintext (a local broker).
    pub connection_string: Option<String>,
    /// Further librdkafka properties (`session.timeout.ms` ...).
    pub properties: BTreeMap<String, String>,
    pub dead_letters: PathBuf,
    /// A partition with a backlog whose committed offset has not moved for this long is
    /// stalled (`dsm_kafka_stalled`, `/readyz` fails).
    pub stall_after: Duration,
}

pub struct KafkaInput {
    settings: KafkaSettings,
    consumer: Arc<StreamConsumer>,
    pipeline: Arc<Pipeline>,
    taker: Arc<Taker>,
}

/// Hands messages to the pipeline (in their own tasks, several at a time).
struct Taker {
    settings: KafkaSettings,
    pipeline: Arc<Pipeline>,
}

/// A message being taken: where it is, and the task that answers with its record count.
struct InFlight {
    topic: String,
    partition: i32,
    offset: i64,
    enqueued: Option<i64>,
    task: tokio::task::JoinHandle<u64>,
}

/// Messages taken at once: their translation and the outputs' syncs overlap, while offsets are
/// still committed in order.
const IN_FLIGHT: usize = 8;

/// How often partition lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(10);

impl KafkaInput {
    pub fn new(settings: KafkaSettings, pipeline: Arc<Pipeline>) -> Result<KafkaInput, String> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &settings.brokers)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("client.id", format!("defender-dsm-{}", settings.name));
        if let Some(cs) = &settings.connection_string {
            cfg.set("security.protocol", "SASL_SSL")
                .set("sasl.mechanism", "PLAIN")
                .set("sasl.username", "$ConnectionString")
                .set("sasl.password", cs);
        }
        for (k, v) in &settings.properties {
            cfg.set(k, v);
        }
        let consumer: StreamConsumer = cfg
            .create()
            .map_err(|e| format!("kafka ({}): {e}", settings.name))?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| format!("kafka ({}): subscribing to {topics:?}: {e}", settings.name))?;
        Ok(KafkaInput {
            taker: Arc::new(Taker {
                settings: settings.clone(),
                pipeline: pipeline.clone(),
            }),
            settings,
            consumer: Arc::new(consumer),
            pipeline,
        })
    }

    /// Consumes until `stop` turns true, then commits what was taken.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let name = self.settings.name.clone();
        let mut lag_tick = tokio::time::interval(LAG_EVERY);
        let mut progress: BTreeMap<(String, i32), (i64, std::time::Instant)> = BTreeMap::new();
        let mut in_flight: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
        loop {
            let msg = tokio::select! {
                m = self.consumer.recv() => Some(m),
                // Nothing new for a moment: finish what is in flight.
                _ = tokio::time::sleep(Duration::from_millis(50)), if !in_flight.is_empty() => None,
                _ = lag_tick.tick() => {
                    self.measure_lag(&mut progress).await;
                    continue;
                }
                _ = stop.changed() => break,
            };
            let msg = match msg {
                None => {
                    while let Some(f) = in_flight.pop_front() {
                        self.finish(f).await;
                    }
                    continue;
                }
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(input = %name, error = %e, "kafka");
                    self.pipeline
                        .telemetry
                        .add("dsm_kafka_errors_total", &[("input", &name)], 1);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let (topic, partition, offset) =
                (msg.topic().to_string(), msg.partition(), msg.offset());
            let body = msg.payload().unwrap_or_default().to_vec();
            let enqueued = msg.timestamp().to_millis();
            drop(msg);
            let taker = self.taker.clone();
            let (t, p) = (topic.clone(), partition);
            let task = tokio::spawn(async move { taker.take(body, &t, p, offset).await });
            in_flight.push_back(InFlight {
                topic,
                partition,
                offset,
                enqueued,
                task,
            });
            while in_flight.len() > IN_FLIGHT {
                if let Some(f) = in_flight.pop_front() {
                    self.finish(f).await;
                }
            }
        }
        while let Some(f) = in_flight.pop_front() {
            self.finish(f).await;
        }
        // What was taken is committed before leaving the group (bounded: a broker that does not
        // answer must not hold up shutdown; the offsets then come again, at least once).
        let consumer = self.consumer.clone();
        let closing = tokio::task::spawn_blocking(move || {
            if let Ok(tpl) = consumer.position() {
                let _ = consumer.commit(&tpl, CommitMode::Sync);
            }
            consumer.unsubscribe();
        });
        if tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .is_err()
        {
            tracing::warn!(input = %name, "the final commit did not finish in 5 s");
        }
    }

    /// Lag per assigned partition (high watermark less the committed offset), and whether a
    /// partition with a backlog has stopped moving.
    async fn measure_lag(&self, progress: &mut BTreeMap<(String, i32), (i64, std::time::Instant)>) {
        let consumer = self.consumer.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(5);
            let assigned = consumer.assignment().ok()?;
            let committed = consumer.committed_offsets(assigned, timeout).ok()?;
            let mut out = Vec::new();
            for e in committed.elements() {
                let Ok((_, high)) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout)
                else {
                    continue;
                };
                let at = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                out.push((e.topic().to_string(), e.partition(), at, high));
            }
            Some(out)
        })
        .await;
        let Ok(Some(partitions)) = measured else {
            return;
        };
        let name = self.settings.name.as_str();
        for (topic, partition, at, high) in partitions {
            let p = partition.to_string();
            let labels = [
                ("input", name),
                ("topic", topic.as_str()),
                ("partition", p.as_str()),
            ];
            let lag = (high - at).max(0);
            self.pipeline
                .telemetry
                .set("dsm_kafka_lag", &labels, lag as u64);
            let now = std::time::Instant::now();
            let entry = progress
                .entry((topic.clone(), partition))
                .or_insert((at, now));
            if entry.0 != at {
                *entry = (at, now);
            }
            let stalled = lag > 0 && now.duration_since(entry.1) > self.settings.stall_after;
            self.pipeline
                .telemetry
                .set("dsm_kafka_stalled", &labels, u64::from(stalled));
        }
    }

    /// Waits for a message's records to be taken, then commits its offset.
    async fn finish(&self, f: InFlight) {
        let name = self.settings.name.as_str();
        let records = f.task.await.unwrap_or(0);
        let partition_label = f.partition.to_string();
        let labels = [
            ("input", name),
            ("topic", f.topic.as_str()),
            ("partition", partition_label.as_str()),
        ];
        self.pipeline
            .telemetry
            .add("dsm_kafka_records_total", &labels, records);
        if let Some(ms) = f.enqueued {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            self.pipeline.telemetry.set(
                "dsm_kafka_delay_seconds",
                &labels,
                u64::try_from((now - ms) / 1000).unwrap_or(0),
            );
        }
        let mut tpl = TopicPartitionList::new();
        let committed = tpl
            .add_partition_offset(&f.topic, f.partition, Offset::Offset(f.offset + 1))
            .and_then(|()| self.consumer.commit(&tpl, CommitMode::Async));
        if let Err(e) = committed {
            tracing::warn!(input = %name, error = %e, "kafka commit");
        }
    }
}

impl Taker {
    /// Hands one body to the pipeline and returns its records; a body that is not UTF-8 JSON
    /// goes to the dead letters. Waits while the outputs refuse (a full spool): the message is
    /// not committed before they take it.
    async fn take(&self, body: Vec<u8>, topic: &str, partition: i32, offset: i64) -> u64 {
        let origin = format!("{topic}/{partition}@{offset}");
        let text = match String::from_utf8(body) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                let reason = format!("not UTF-8: {e}");
                self.dead_letter(topic, partition, offset, &reason, e.as_bytes());
                return 0;
            }
        };
        loop {
            match self
                .pipeline
                .ingest(text.clone(), &origin, "eventhub", None)
                .await
            {
                Ok(taken) => return taken.records,
                Err(IngestError::Malformed(reason)) => {
                    self.dead_letter(topic, partition, offset, &reason, text.as_bytes());
                    return 0;
                }
                Err(e) => {
                    tracing::warn!(input = %self.settings.name, %origin, error = %e, "outputs refused; the message waits");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    fn dead_letter(&self, topic: &str, partition: i32, offset: i64, reason: &str, body: &[u8]) {
        self.pipeline.telemetry.add(
            "dsm_kafka_dead_letters_total",
            &[("input", &self.settings.name)],
            1,
        );
        let line = serde_json::json!({
            "input": self.settings.name,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "reason": reason,
            "body": String::from_utf8_lossy(body),
        })
        .to_string();
        let path = self
            .settings
            .dead_letters
            .join(format!("input-{}.ndjson", self.settings.name));
        let written = std::fs::create_dir_all(&self.settings.dead_letters).and_then(|()| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            f.write_all(line.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_data()
        });
        match written {
            Ok(()) => {
                tracing::warn!(input = %self.settings.name, %topic, partition, offset, %reason, "message dead-lettered")
            }
            Err(e) => {
                tracing::error!(input = %self.settings.name, %topic, partition, offset, %reason, error = %e, "message could not be dead-lettered; it is logged here: {line}")
            }
        }
    }
}
