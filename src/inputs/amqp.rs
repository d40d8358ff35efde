//! `AmqpInput`: the Defender Streaming API through Event Hubs' AMQP endpoint (every tier, the
//! protocol QRadar's own Event Hubs source uses), with Microsoft's `azure_messaging_eventhubs`
//! event processor and its Azure Blob checkpoint store.
//!
//! Instances with the same consumer group and checkpoint container balance the partitions
//! through ownership blobs; one processor runs per event hub. Messages go through the shared
//! stream contract ([`super::stream`]); a partition's checkpoint moves only past messages every
//! output has (sent or spooled), written at most once a second per partition and once more
//! when the partition is given up, so a crash sends at most about a second of messages again
//! (at least once; record ids make the duplicates harmless downstream). When another instance
//! takes a partition, nothing more is checkpointed for it here: the new owner resumes from the
//! last checkpoint.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use azure_messaging_eventhubs::error::ErrorKind as HubsErrorKind;
use azure_messaging_eventhubs::models::{Checkpoint, Ownership, StartPositions};
use azure_messaging_eventhubs::processor::PartitionClient;
use azure_messaging_eventhubs::{
    CheckpointStore, ConsumerClient, EventProcessor, ProcessorStrategy, StartLocation,
    StartPosition,
};
use azure_messaging_eventhubs_checkpointstore_blob::BlobCheckpointStore;
use azure_storage_blob::BlobContainerClient;
use futures::StreamExt;
use tokio::sync::watch;

use super::stream::{InOrder, PartitionWatch, StreamMessage, StreamTaker};
use crate::pipeline::Pipeline;

/// Where to consume from, and how to share the work.
#[derive(Clone)]
pub struct AmqpSettings {
    pub name: String,
    /// `<namespace>.servicebus.windows.net`, as given: the processor names its checkpoint and
    /// ownership blobs with it unchanged, and so must the checkpoints written here.
    pub namespace: String,
    pub hubs: Vec<String>,
    pub consumer_group: String,
    /// An AMQP address to connect to in place of the namespace (a proxy, a private endpoint,
    /// a local stand-in); the namespace still names the hub and the checkpoints.
    pub endpoint: Option<String>,
    /// Entra ID: signs in to Event Hubs (and to the checkpoint container, unless it is a SAS URL).
    pub credential: Arc<dyn TokenCredential>,
    /// The checkpoint container: `https://<account>.blob.core.windows.net/<container>`, or a
    /// container SAS URL.
    pub checkpoint_container: url::Url,
    /// The container URL carries a SAS: no Entra token for storage.
    pub checkpoint_sas: bool,
    /// Where a partition without a checkpoint starts.
    pub start_earliest: bool,
    /// Names this instance in the ownership blobs.
    pub instance_id: String,
    /// How often the processor balances partitions, and when an owner that stopped renewing
    /// loses them.
    pub balance_every: Duration,
    pub ownership_expiry: Duration,
    pub prefetch: u32,
    pub dead_letters: PathBuf,
    pub stall_after: Duration,
}

impl std::fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("hubs", &self.hubs)
            .field("consumer_group", &self.consumer_group)
            .finish_non_exhaustive()
    }
}

pub struct AmqpInput {
    settings: Arc<AmqpSettings>,
    pipeline: Arc<Pipeline>,
}

/// What the processor's partition tasks share with the lag measurement: per owned partition,
/// the sequence number checkpointed last (-1: none yet).
type Owned = Arc<Mutex<BTreeMap<String, i64>>>;

/// Messages taken at once per partition.
const IN_FLIGHT: usize = 8;

/// A partition's checkpoint is written at most this often while it is read.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How often partition lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(10);

/// How long a checkpoint store call may take.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// A hub that cannot be opened (credentials, network, storage) is tried again after this.
const REOPEN_AFTER: Duration = Duration::from_secs(10);

impl AmqpInput {
    pub fn new(settings: AmqpSettings, pipeline: Arc<Pipeline>) -> AmqpInput {
        AmqpInput {
            settings: Arc::new(settings),
            pipeline,
        }
    }

    /// Consumes every hub until `stop` turns true, then checkpoints what was taken.
    ///
    /// The SDK's partition streams are not `Send`, so the consumers run on a thread of their
    /// own (a current-thread runtime); the bodies are translated on the service's runtime.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let name = self.settings.name.clone();
        let taker = Arc::new(StreamTaker::new(
            &name,
            self.pipeline.clone(),
            self.settings.dead_letters.clone(),
            tokio::runtime::Handle::current(),
        ));
        let settings = self.settings.clone();
        let consumers = move || -> std::io::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let mut hubs = tokio::task::JoinSet::new();
                for hub in &settings.hubs {
                    let consumer = HubConsumer {
                        settings: settings.clone(),
                        taker: taker.clone(),
                        hub: hub.clone(),
                    };
                    hubs.spawn_local(consumer.run(stop.clone()));
                }
                while hubs.join_next().await.is_some() {}
            });
            Ok(())
        };
        let thread = std::thread::Builder::new()
            .name(format!("eventhubs-{name}"))
            .spawn(consumers);
        let ended = match thread {
            Ok(t) => tokio::task::spawn_blocking(move || t.join()).await,
            Err(e) => {
                tracing::error!(input = %name, error = %e, "event hubs: no thread for the consumers");
                return;
            }
        };
        match ended {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::error!(input = %name, error = %e, "event hubs: no runtime for the consumers")
            }
            _ => tracing::error!(input = %name, "event hubs: the consumers' thread failed"),
        }
    }
}

/// One event hub's processor and its partitions.
struct HubConsumer {
    settings: Arc<AmqpSettings>,
    taker: Arc<StreamTaker>,
    hub: String,
}

impl HubConsumer {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            match self.open().await {
                Ok((processor, store, management)) => {
                    if self
                        .consume(processor, store, management, stop.clone())
                        .await
                    {
                        return;
                    }
                }
                Err(e) => self.error(&format!("opening the hub: {e}")),
            }
            tokio::select! {
                _ = tokio::time::sleep(REOPEN_AFTER) => {}
                _ = stop.changed() => return,
            }
        }
    }

    fn error(&self, what: &str) {
        self.taker.error(&self.hub, None, what);
    }

    /// A consumer client: one for the processor, one for partition properties (lag).
    async fn client(&self, role: &str) -> azure_messaging_eventhubs::Result<ConsumerClient> {
        let s = &self.settings;
        let mut builder = ConsumerClient::builder()
            .with_consumer_group(s.consumer_group.clone())
            .with_instance_id(format!("{}{role}", s.instance_id));
        if let Some(e) = &s.endpoint {
            builder = builder.with_custom_endpoint(e.clone());
        }
        builder
            .open(&s.namespace, self.hub.clone(), s.credential.clone())
            .await
    }

    async fn open(
        &self,
    ) -> Result<
        (
            Arc<EventProcessor>,
            Arc<BlobCheckpointStore>,
            ConsumerClient,
        ),
        String,
    > {
        let s = &self.settings;
        let storage_credential = (!s.checkpoint_sas).then(|| s.credential.clone());
        let container =
            BlobContainerClient::new(s.checkpoint_container.clone(), storage_credential, None)
                .map_err(|e| format!("checkpoint container: {e}"))?;
        let store = BlobCheckpointStore::new(container);
        let consumer = self.client("").await.map_err(|e| e.to_string())?;
        let management = self.client("-lag").await.map_err(|e| e.to_string())?;
        let start = StartPosition {
            location: if s.start_earliest {
                StartLocation::Earliest
            } else {
                StartLocation::Latest
            },
            inclusive: false,
        };
        let processor = EventProcessor::builder()
            .with_load_balancing_strategy(ProcessorStrategy::Balanced)
            .with_update_interval(sdk_duration(s.balance_every))
            .with_partition_expiration_duration(sdk_duration(s.ownership_expiry))
            .with_start_positions(StartPositions {
                per_partition: Default::default(),
                default: start,
            })
            .with_prefetch(s.prefetch)
            .build(consumer, store.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok((processor, store, management))
    }

    /// Reads the hub until the service stops (true) or the processor fails (false).
    async fn consume(
        &self,
        processor: Arc<EventProcessor>,
        store: Arc<BlobCheckpointStore>,
        management: ConsumerClient,
        mut stop: watch::Receiver<bool>,
    ) -> bool {
        let mut running = {
            let p = processor.clone();
            tokio::task::spawn_local(async move { p.run().await })
        };
        // The partitions end with the service, or when the processor fails and is reopened.
        let (halt, halted) = watch::channel(false);
        let owned: Owned = Arc::new(Mutex::new(BTreeMap::new()));
        let mut watch = PartitionWatch::new(self.settings.stall_after);
        let mut lag_tick = tokio::time::interval(LAG_EVERY);
        let mut partitions = tokio::task::JoinSet::new();
        let stopped = loop {
            tokio::select! {
                client = processor.next_partition_client() => match client {
                    Ok(client) => {
                        let task = PartitionTask {
                            settings: self.settings.clone(),
                            taker: self.taker.clone(),
                            store: store.clone(),
                            hub: self.hub.clone(),
                            owned: owned.clone(),
                        };
                        partitions.spawn_local(task.run(client, halted.clone()));
                    }
                    Err(e) => {
                        self.error(&format!("next partition: {e}"));
                        break false;
                    }
                },
                ended = &mut running => {
                    let why = match ended {
                        Ok(Err(e)) => e.to_string(),
                        _ => "it ended".to_string(),
                    };
                    self.error(&format!("the event processor stopped ({why}); reopening"));
                    break false;
                }
                Some(_) = partitions.join_next() => {}
                _ = lag_tick.tick() => self.measure_lag(&management, &owned, &mut watch).await,
                _ = stop.changed() => break true,
            }
        };
        let _ = halt.send(true);
        let _ = processor.shutdown().await;
        let mut held = Vec::new();
        while let Some(done) = partitions.join_next().await {
            if let Ok(Some(p)) = done {
                held.push(p);
            }
        }
        if stopped {
            // Once the processor's loop has ended it renews nothing more: the partitions are
            // given up so that the other instances take them now, not after they expire.
            let _ = tokio::time::timeout(self.settings.balance_every + STORE_TIMEOUT, &mut running)
                .await;
            self.relinquish(&store, &held).await;
        }
        running.abort();
        let _ = management.close().await;
        stopped
    }

    /// Clears the owner of the partitions this instance still holds (`held`: partition and the
    /// owner id it claimed them under), each write conditional on the ownership blob's ETag, so
    /// a partition another instance took meanwhile is left alone.
    async fn relinquish(&self, store: &BlobCheckpointStore, held: &[(String, String)]) {
        if held.is_empty() {
            return;
        }
        let s = &self.settings;
        let listed = tokio::time::timeout(
            STORE_TIMEOUT,
            store.list_ownerships(&s.namespace, &self.hub, &s.consumer_group),
        )
        .await;
        let Ok(Ok(all)) = listed else {
            self.error("listing ownerships to give the partitions up");
            return;
        };
        let mine: Vec<Ownership> = all
            .into_iter()
            .filter(|o| {
                held.iter()
                    .any(|(p, owner)| *p == o.partition_id && o.owner_id.as_ref() == Some(owner))
            })
            .map(|mut o| {
                o.owner_id = None;
                o
            })
            .collect();
        match tokio::time::timeout(STORE_TIMEOUT, store.claim_ownership(&mine)).await {
            Ok(Ok(done)) => {
                tracing::info!(input = %s.name, hub = %self.hub, partitions = done.len(), "partitions given up")
            }
            _ => self.error("giving the partitions up"),
        }
    }

    /// Lag per owned partition: last enqueued sequence number less the one checkpointed.
    async fn measure_lag(
        &self,
        management: &ConsumerClient,
        owned: &Owned,
        watch: &mut PartitionWatch,
    ) {
        let snapshot: Vec<(String, i64)> = match owned.lock() {
            Ok(o) => o.iter().map(|(p, s)| (p.clone(), *s)).collect(),
            Err(_) => return,
        };
        let reading: Vec<(String, String)> = snapshot
            .iter()
            .map(|(p, _)| (self.hub.clone(), p.clone()))
            .collect();
        watch.keep_only(&self.taker, &reading);
        for (partition, checkpointed) in snapshot {
            match management.get_partition_properties(&partition).await {
                Ok(props) => {
                    let lag = if props.is_empty {
                        0
                    } else {
                        props.last_enqueued_sequence_number - checkpointed
                    };
                    watch.observe(&self.taker, &self.hub, &partition, checkpointed, lag);
                }
                Err(e) => self.error(&format!("partition {partition} properties: {e}")),
            }
        }
    }
}

/// Reads one owned partition until it is given up, taken by another instance, or stopped.
struct PartitionTask {
    settings: Arc<AmqpSettings>,
    taker: Arc<StreamTaker>,
    store: Arc<BlobCheckpointStore>,
    hub: String,
    owned: Owned,
}

/// Where a taken message is: what its checkpoint names.
struct Position {
    offset: Option<String>,
    sequence: Option<i64>,
}

impl PartitionTask {
    /// Returns the partition and the owner id it was claimed under when it is still held at
    /// the end (not taken by another instance).
    async fn run(
        self,
        client: Arc<PartitionClient>,
        mut stop: watch::Receiver<bool>,
    ) -> Option<(String, String)> {
        let partition = client.get_partition_id().to_string();
        tracing::info!(input = %self.settings.name, hub = %self.hub, %partition, "partition owned");
        let start = self.checkpointed(&partition).await;
        let owner = self.owner(&partition).await;
        if let Ok(mut o) = self.owned.lock() {
            o.insert(partition.clone(), start);
        }
        let mut in_flight: InOrder<Position> = InOrder::new(self.taker.clone());
        let mut taken: Option<Position> = None;
        let mut written = Instant::now();
        let mut taken_by_another = false;
        {
            let mut events = client.stream_events();
            loop {
                tokio::select! {
                    e = events.next() => match e {
                        Some(Ok(event)) => {
                            let position = Position {
                                offset: event.offset().clone(),
                                sequence: event.sequence_number(),
                            };
                            let enqueued_ms = event.enqueued_time().and_then(|t| {
                                t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as i64)
                            });
                            let body = event.event_data().body().unwrap_or_default().to_vec();
                            in_flight.push(
                                StreamMessage {
                                    hub: self.hub.clone(),
                                    partition: partition.clone(),
                                    position: position.sequence.unwrap_or(-1),
                                    enqueued_ms,
                                    body,
                                },
                                position,
                            );
                            while in_flight.len() > IN_FLIGHT {
                                taken = in_flight.next().await.or(taken);
                            }
                        }
                        Some(Err(e)) => {
                            taken_by_another = matches!(e.kind, HubsErrorKind::ConsumerDisconnected(_));
                            if taken_by_another {
                                tracing::info!(input = %self.settings.name, hub = %self.hub, %partition, "partition taken by another instance");
                            } else {
                                self.error(&partition, &format!("receiving: {e}"));
                            }
                            break;
                        }
                        None => break,
                    },
                    // Nothing new for a moment: finish what is in flight.
                    _ = tokio::time::sleep(Duration::from_millis(50)), if !in_flight.is_empty() => {
                        while let Some(p) = in_flight.next().await {
                            taken = Some(p);
                        }
                    }
                    // Taken but not yet checkpointed, and the partition went quiet.
                    _ = tokio::time::sleep_until((written + CHECKPOINT_EVERY).into()), if taken.is_some() => {}
                    _ = stop.changed() => break,
                }
                if written.elapsed() >= CHECKPOINT_EVERY {
                    if let Some(p) = &taken {
                        if self.checkpoint(&partition, p).await {
                            taken = None;
                        }
                        written = Instant::now();
                    }
                }
            }
        }
        while let Some(p) = in_flight.next().await {
            taken = Some(p);
        }
        if let Ok(mut o) = self.owned.lock() {
            o.remove(&partition);
        }
        if !taken_by_another {
            if let Some(p) = &taken {
                self.checkpoint(&partition, p).await;
            }
        }
        match Arc::try_unwrap(client) {
            Ok(c) => {
                if let Err(e) = c.close().await {
                    tracing::debug!(input = %self.settings.name, %partition, error = %e, "closing the partition client");
                }
            }
            Err(_) => {
                tracing::debug!(input = %self.settings.name, %partition, "partition client still shared")
            }
        }
        tracing::info!(input = %self.settings.name, hub = %self.hub, %partition, "partition let go");
        if taken_by_another {
            None
        } else {
            owner.map(|o| (partition, o))
        }
    }

    /// The owner id the partition's ownership blob names now (this instance's, as the
    /// processor has just claimed it).
    async fn owner(&self, partition: &str) -> Option<String> {
        let s = &self.settings;
        let listed = tokio::time::timeout(
            STORE_TIMEOUT,
            self.store
                .list_ownerships(&s.namespace, &self.hub, &s.consumer_group),
        )
        .await;
        match listed {
            Ok(Ok(all)) => all
                .into_iter()
                .find(|o| o.partition_id == partition)
                .and_then(|o| o.owner_id),
            _ => None,
        }
    }

    fn error(&self, partition: &str, what: &str) {
        self.taker.error(&self.hub, Some(partition), what);
    }

    /// The sequence number the partition's checkpoint names (-1: none), where the processor
    /// started it.
    async fn checkpointed(&self, partition: &str) -> i64 {
        let s = &self.settings;
        let listed = tokio::time::timeout(
            STORE_TIMEOUT,
            self.store
                .list_checkpoints(&s.namespace, &self.hub, &s.consumer_group),
        )
        .await
        .unwrap_or_else(|_| {
            Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Io,
                format!("no answer in {STORE_TIMEOUT:?}"),
            ))
        });
        match listed {
            Ok(all) => all
                .iter()
                .find(|c| c.partition_id == partition)
                .and_then(|c| c.sequence_number)
                .unwrap_or(-1),
            Err(e) => {
                self.error(partition, &format!("listing checkpoints: {e}"));
                -1
            }
        }
    }

    /// Writes the partition's checkpoint; false when it could not (it is tried again with the
    /// next one). Bounded: the SDK's own retries would otherwise hold the partition for minutes
    /// while the store is unreachable.
    async fn checkpoint(&self, partition: &str, p: &Position) -> bool {
        let checkpoint = Checkpoint {
            fully_qualified_namespace: self.settings.namespace.clone(),
            event_hub_name: self.hub.clone(),
            consumer_group: self.settings.consumer_group.clone(),
            partition_id: partition.to_string(),
            offset: p.offset.clone(),
            sequence_number: p.sequence,
        };
        let written =
            tokio::time::timeout(STORE_TIMEOUT, self.store.update_checkpoint(checkpoint)).await;
        match written {
            Ok(Ok(())) => {
                if let (Some(seq), Ok(mut o)) = (p.sequence, self.owned.lock()) {
                    if let Some(s) = o.get_mut(partition) {
                        *s = seq;
                    }
                }
                true
            }
            Ok(Err(e)) => {
                self.error(partition, &format!("checkpoint: {e}"));
                false
            }
            Err(_) => {
                self.error(
                    partition,
                    &format!("checkpoint: no answer in {STORE_TIMEOUT:?}"),
                );
                false
            }
        }
    }
}

fn sdk_duration(d: Duration) -> azure_core::time::Duration {
    azure_core::time::Duration::try_from(d).unwrap_or(azure_core::time::Duration::MAX)
}
