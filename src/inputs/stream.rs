//! The contract both Event Hubs consumers share (the Kafka endpoint and AMQP): a message is
//! (hub, partition, position, enqueued time, body). Its records go to the pipeline in a task of
//! their own; the consumer learns, in the order the messages came, when every output has them,
//! and only then moves its checkpoint past them. A body that is not UTF-8 JSON goes to the
//! input's dead letters, naming its hub, partition and position, and counts as taken, so the
//! partition moves on.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::pipeline::{IngestError, Pipeline};

/// One Event Hubs message.
#[derive(Debug)]
pub struct StreamMessage {
    /// The event hub (the Kafka topic, on the Kafka endpoint).
    pub hub: String,
    pub partition: String,
    /// The Kafka offset, or the AMQP sequence number: what a dead letter names.
    pub position: i64,
    /// When Event Hubs enqueued it (ms since the epoch).
    pub enqueued_ms: Option<i64>,
    pub body: Vec<u8>,
}

/// Hands message bodies to the pipeline.
pub struct StreamTaker {
    input: String,
    pipeline: Arc<Pipeline>,
    dead_letters: PathBuf,
    /// Where bodies are translated: the service's multi-threaded runtime, also when the
    /// consumer itself runs elsewhere (the AMQP client's streams are not `Send`).
    runtime: tokio::runtime::Handle,
}

impl StreamTaker {
    pub fn new(
        input: &str,
        pipeline: Arc<Pipeline>,
        dead_letters: PathBuf,
        runtime: tokio::runtime::Handle,
    ) -> StreamTaker {
        StreamTaker {
            input: input.to_string(),
            pipeline,
            dead_letters,
            runtime,
        }
    }

    /// Logs a client error (receive, sign-in, checkpoint, ownership) and counts it.
    pub fn error(&self, hub: &str, partition: Option<&str>, what: &str) {
        let partition = partition.unwrap_or("-");
        tracing::warn!(input = %self.input, %hub, %partition, "event hubs: {what}");
        self.pipeline
            .telemetry
            .add("dsm_eventhub_errors_total", &[("input", &self.input)], 1);
    }

    /// Hands one body to the pipeline and returns its records. Waits while the outputs refuse
    /// (a full spool): the message must not be checkpointed before they take it.
    async fn take(&self, msg: StreamMessage) -> u64 {
        let origin = format!("{}/{}@{}", msg.hub, msg.partition, msg.position);
        let text = match String::from_utf8(msg.body) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                let reason = format!("not UTF-8: {e}");
                let body = String::from_utf8_lossy(e.as_bytes()).into_owned();
                self.dead_letter(&msg.hub, &msg.partition, msg.position, &reason, &body);
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
                Err(IngestError::Malformed(reason) | IngestError::TooLarge(reason)) => {
                    self.dead_letter(&msg.hub, &msg.partition, msg.position, &reason, &text);
                    return 0;
                }
                Err(e) => {
                    tracing::warn!(input = %self.input, %origin, error = %e, "outputs refused; the message waits");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    fn dead_letter(&self, hub: &str, partition: &str, position: i64, reason: &str, body: &str) {
        self.pipeline.telemetry.add(
            "dsm_eventhub_dead_letters_total",
            &[("input", &self.input)],
            1,
        );
        let line = serde_json::json!({
            "input": self.input,
            "hub": hub,
            "partition": partition,
            "position": position,
            "reason": reason,
            "body": body,
        })
        .to_string();
        let path = self
            .dead_letters
            .join(format!("input-{}.ndjson", self.input));
        let written = std::fs::create_dir_all(&self.dead_letters).and_then(|()| {
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
                tracing::warn!(input = %self.input, %hub, %partition, position, %reason, "message dead-lettered")
            }
            Err(e) => {
                tracing::error!(input = %self.input, %hub, %partition, position, %reason, error = %e, "message could not be dead-lettered; it is logged here: {line}")
            }
        }
    }
}

/// A message being taken, and what its consumer needs back to checkpoint it.
struct Taking<P> {
    at: P,
    hub: String,
    partition: String,
    enqueued_ms: Option<i64>,
    task: tokio::task::JoinHandle<u64>,
}

/// Messages being taken, several at a time (their translation and the outputs' syncs
/// overlap), answered in the order they came.
pub struct InOrder<P> {
    taker: Arc<StreamTaker>,
    queue: VecDeque<Taking<P>>,
}

impl<P> InOrder<P> {
    pub fn new(taker: Arc<StreamTaker>) -> InOrder<P> {
        InOrder {
            taker,
            queue: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Starts taking `msg`; `at` comes back from [`InOrder::next`] once it is taken.
    pub fn push(&mut self, msg: StreamMessage, at: P) {
        let (hub, partition, enqueued_ms) =
            (msg.hub.clone(), msg.partition.clone(), msg.enqueued_ms);
        let taker = self.taker.clone();
        let task = self
            .taker
            .runtime
            .spawn(async move { taker.take(msg).await });
        self.queue.push_back(Taking {
            at,
            hub,
            partition,
            enqueued_ms,
            task,
        });
    }

    /// Waits for the oldest message to be taken, counts its records, and returns its `at`.
    pub async fn next(&mut self) -> Option<P> {
        let t = self.queue.pop_front()?;
        let records = t.task.await.unwrap_or(0);
        let telemetry = &self.taker.pipeline.telemetry;
        let labels = [
            ("input", self.taker.input.as_str()),
            ("hub", t.hub.as_str()),
            ("partition", t.partition.as_str()),
        ];
        telemetry.add("dsm_eventhub_records_total", &labels, records);
        if let Some(ms) = t.enqueued_ms {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let delay = u64::try_from((now - ms) / 1000).unwrap_or(0);
            telemetry.set("dsm_eventhub_delay_seconds", &labels, delay);
        }
        Some(t.at)
    }
}

/// Per partition: how far behind it is, how old its checkpoint is, and whether it stalled (a
/// backlog and a checkpoint that has not moved for `stall_after`; `/readyz` then fails).
pub struct PartitionWatch {
    stall_after: Duration,
    moved: BTreeMap<(String, String), (i64, Instant)>,
}

impl PartitionWatch {
    pub fn new(stall_after: Duration) -> PartitionWatch {
        PartitionWatch {
            stall_after,
            moved: BTreeMap::new(),
        }
    }

    /// `checkpoint`: the position checkpointed; `lag`: messages after it.
    pub fn observe(
        &mut self,
        taker: &StreamTaker,
        hub: &str,
        partition: &str,
        checkpoint: i64,
        lag: i64,
    ) {
        let labels = [
            ("input", taker.input.as_str()),
            ("hub", hub),
            ("partition", partition),
        ];
        let telemetry = &taker.pipeline.telemetry;
        let lag = lag.max(0);
        telemetry.set("dsm_eventhub_lag", &labels, lag as u64);
        let now = Instant::now();
        let entry = self
            .moved
            .entry((hub.to_string(), partition.to_string()))
            .or_insert((checkpoint, now));
        if entry.0 != checkpoint {
            *entry = (checkpoint, now);
        }
        let still = now.duration_since(entry.1);
        telemetry.set(
            "dsm_eventhub_checkpoint_age_seconds",
            &labels,
            still.as_secs(),
        );
        let stalled = lag > 0 && still > self.stall_after;
        telemetry.set("dsm_eventhub_stalled", &labels, u64::from(stalled));
    }

    /// Forgets the partitions this instance no longer reads (another instance took them):
    /// their gauges are dropped, so another instance's backlog does not fail this one's
    /// readiness.
    pub fn keep_only(&mut self, taker: &StreamTaker, reading: &[(String, String)]) {
        let gone: Vec<(String, String)> = self
            .moved
            .keys()
            .filter(|k| !reading.contains(k))
            .cloned()
            .collect();
        for (hub, partition) in gone {
            self.moved.remove(&(hub.clone(), partition.clone()));
            let labels = [
                ("input", taker.input.as_str()),
                ("hub", hub.as_str()),
                ("partition", partition.as_str()),
            ];
            for metric in [
                "dsm_eventhub_stalled",
                "dsm_eventhub_lag",
                "dsm_eventhub_checkpoint_age_seconds",
            ] {
                taker.pipeline.telemetry.forget(metric, &labels);
            }
        }
    }
}
