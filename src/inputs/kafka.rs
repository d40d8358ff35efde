//! `KafkaInput`: the Defender Streaming API through Event Hubs' Kafka endpoint (Standard tier
//! and above), with librdkafka (`rdkafka`, bundled).
//!
//! Messages go through the shared stream contract ([`super::stream`]); an offset is committed
//! only once every output has its message's events (sent or spooled), so a crash or a
//! rebalance sends at most the uncommitted messages again (at least once; record ids make the
//! duplicates harmless downstream). Instances with the same consumer group split the
//! partitions; when one leaves, the others take over from the committed offsets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::kafka_oauth::{EntraTokens, KafkaContext};
use super::stream::{InOrder, PartitionWatch, StreamMessage, StreamTaker};
use crate::pipeline::Pipeline;

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
    /// Entra ID sign-in (SASL_SSL with OAUTHBEARER) instead of a connection string.
    pub credential: Option<Arc<dyn azure_core::credentials::TokenCredential>>,
    /// Further librdkafka properties (`session.timeout.ms` ...).
    pub properties: BTreeMap<String, String>,
    pub dead_letters: PathBuf,
    /// A partition with a backlog whose committed offset has not moved for this long is
    /// stalled (`dsm_eventhub_stalled`, `/readyz` fails).
    pub stall_after: Duration,
}

pub struct KafkaInput {
    settings: KafkaSettings,
    consumer: Arc<StreamConsumer<KafkaContext>>,
    pipeline: Arc<Pipeline>,
}

/// Where a message taken is: what its commit names.
struct At {
    topic: String,
    partition: i32,
    offset: i64,
}

/// Messages taken at once: their translation and the outputs' syncs overlap, while offsets are
/// still committed in order.
const IN_FLIGHT: usize = 8;

/// How often partition lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(10);

impl KafkaInput {
    pub fn new(
        settings: KafkaSettings,
        pipeline: Arc<Pipeline>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<KafkaInput, String> {
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
        if settings.credential.is_some() {
            cfg.set("security.protocol", "SASL_SSL")
                .set("sasl.mechanism", "OAUTHBEARER");
        }
        for (k, v) in &settings.properties {
            cfg.set(k, v);
        }
        let context = KafkaContext {
            entra: settings.credential.clone().map(|credential| EntraTokens {
                credential,
                scope: EntraTokens::scope_for(&settings.brokers),
                runtime: runtime.clone(),
            }),
        };
        let consumer: StreamConsumer<KafkaContext> = cfg
            .create_with_context(context)
            .map_err(|e| format!("kafka ({}): {e}", settings.name))?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| format!("kafka ({}): subscribing to {topics:?}: {e}", settings.name))?;
        Ok(KafkaInput {
            pipeline,
            settings,
            consumer: Arc::new(consumer),
        })
    }

    /// Consumes until `stop` turns true, then commits what was taken.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let name = self.settings.name.clone();
        let taker = Arc::new(StreamTaker::new(
            &name,
            self.pipeline.clone(),
            self.settings.dead_letters.clone(),
            tokio::runtime::Handle::current(),
        ));
        let mut lag_tick = tokio::time::interval(LAG_EVERY);
        let mut watch = PartitionWatch::new(self.settings.stall_after);
        let mut in_flight: InOrder<At> = InOrder::new(taker.clone());
        loop {
            let msg = tokio::select! {
                m = self.consumer.recv() => Some(m),
                // Nothing new for a moment: finish what is in flight.
                _ = tokio::time::sleep(Duration::from_millis(50)), if !in_flight.is_empty() => None,
                _ = lag_tick.tick() => {
                    self.measure_lag(&taker, &mut watch).await;
                    continue;
                }
                _ = stop.changed() => break,
            };
            let msg = match msg {
                None => {
                    while let Some(at) = in_flight.next().await {
                        self.commit(at);
                    }
                    continue;
                }
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    let topics = self.settings.topics.join(",");
                    taker.error(&topics, None, &format!("kafka: {e}"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let at = At {
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
            };
            let message = StreamMessage {
                hub: at.topic.clone(),
                partition: at.partition.to_string(),
                position: at.offset,
                enqueued_ms: msg.timestamp().to_millis(),
                body: msg.payload().unwrap_or_default().to_vec(),
            };
            drop(msg);
            in_flight.push(message, at);
            while in_flight.len() > IN_FLIGHT {
                if let Some(at) = in_flight.next().await {
                    self.commit(at);
                }
            }
        }
        while let Some(at) = in_flight.next().await {
            self.commit(at);
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
    async fn measure_lag(&self, taker: &StreamTaker, watch: &mut PartitionWatch) {
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
        let reading: Vec<(String, String)> = partitions
            .iter()
            .map(|(t, p, _, _)| (t.clone(), p.to_string()))
            .collect();
        watch.keep_only(taker, &reading);
        for (topic, partition, at, high) in partitions {
            watch.observe(taker, &topic, &partition.to_string(), at, high - at);
        }
    }

    /// Commits past a message that was taken.
    fn commit(&self, at: At) {
        let mut tpl = TopicPartitionList::new();
        let committed = tpl
            .add_partition_offset(&at.topic, at.partition, Offset::Offset(at.offset + 1))
            .and_then(|()| self.consumer.commit(&tpl, CommitMode::Async));
        if let Err(e) = committed {
            tracing::warn!(input = %self.settings.name, error = %e, "kafka commit");
        }
    }
}
