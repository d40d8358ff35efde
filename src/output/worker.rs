//! `OutputWorker`: one task per output, behind a bounded queue, between the producers
//! (`translate`, the service's inputs) and an endpoint; the encoding is in `batch`, the
//! delivery in `sink`.
//!
//! A producer encodes its events for the output ([`Batch::add`]) and submits the batch; the
//! answer comes once the batch is durable: appended to the output's spool and synced, or, for
//! an output without a spool, sent. Only then may the producer acknowledge its own input. The
//! queue holds a few batches; when it is full, `submit_blocking` waits (backpressure). The worker drains
//! the spool in order while the endpoint takes events, and after a failure waits a jittered,
//! growing backoff before it tries again, taking new batches meanwhile.
//!
//! A full spool follows its policy: `block` drains first and otherwise refuses the batch whole
//! (the producer stops or answers 503; nothing of the batch was accepted), `drop-oldest` gives
//! up the oldest spooled events, counted. Events refused for good (by the endpoint, or too large
//! to render) go to the output's dead letters, synced before the spool lets go of them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use super::batch::{Batch, Encoding};
use super::bulk::BulkOutput;
use super::dead_letter::DeadLetters;
use super::file::{FileOutput, FileTarget};
use super::sink::Sink;
use super::spool::{Spool, SpoolError};
use super::syslog::SyslogTarget;
use super::{backoff, OutputError};

/// What a full spool does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    Block,
    DropOldest,
}

/// The endpoint side of an output.
pub enum Endpoint {
    Syslog(SyslogTarget),
    Bulk(Box<BulkOutput>),
    /// Lines in a local file: synced before a batch is answered, so it needs no spool.
    File(FileTarget),
}

pub struct SpoolSettings {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub full: FullPolicy,
}

impl SpoolSettings {
    /// The spool of output `name` under the data directory (`<dir>/spool/<name>`), in 64 MB
    /// segments.
    pub fn in_data_dir(
        data_dir: &std::path::Path,
        name: &str,
        max_bytes: u64,
        full: FullPolicy,
    ) -> SpoolSettings {
        SpoolSettings {
            dir: data_dir.join("spool").join(super::dir_name(name)),
            max_bytes,
            segment_bytes: 64 << 20,
            full,
        }
    }
}

/// What an output did, for the run's summary (and later the metrics).
#[derive(Debug, Default, Clone)]
pub struct OutputReport {
    pub name: String,
    pub delivered: u64,
    /// Bytes of the events delivered (before framing or compression).
    pub bytes: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    pub trimmed: u64,
    pub reconnects: u64,
    /// Events still in the spool at the end.
    pub pending: u64,
    /// Why the endpoint is unreachable, if it was at the end.
    pub down: Option<String>,
}

impl OutputReport {
    pub fn line(&self) -> String {
        let mut s = format!(
            "{}: {} events delivered, {} reconnects",
            self.name, self.delivered, self.reconnects
        );
        for (n, what) in [
            (self.duplicates, "already stored (409)"),
            (self.trimmed, "trimmed to fit"),
            (self.dead_lettered, "dead-lettered"),
            (self.dropped, "dropped from a full spool"),
        ] {
            if n > 0 {
                s.push_str(&format!(", {n} {what}"));
            }
        }
        if self.pending > 0 {
            s.push_str(&format!(
                ", {} kept in the spool ({})",
                self.pending,
                self.down.as_deref().unwrap_or("not yet sent")
            ));
        }
        s
    }
}

/// What an output has done so far, for `/metrics` and `/readyz` while it runs.
#[derive(Debug, Default)]
pub struct OutputStats {
    pub delivered: AtomicU64,
    pub bytes: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub dropped: AtomicU64,
    /// Events in the spool, and their bytes.
    pub pending: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub spool_max_bytes: AtomicU64,
    /// Unix seconds of the last delivery (0: none yet).
    pub last_success: AtomicU64,
    /// Unix seconds since which the spool has not been empty (0: it is empty).
    pub backlog_since: AtomicU64,
    /// The endpoint failed its last attempt.
    pub down: AtomicBool,
    /// The last batch was refused because the spool is full.
    pub full: AtomicBool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why an output did not take a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    /// The spool is full and the endpoint is not taking events: try again later.
    #[error("{0}")]
    Full(String),
    #[error("{0}")]
    Failed(String),
}

impl From<String> for Refused {
    fn from(s: String) -> Self {
        Refused::Failed(s)
    }
}

type Ack = oneshot::Sender<Result<(), Refused>>;

/// A producer's side of an output.
pub struct OutputHandle {
    pub name: String,
    pub encoding: Encoding,
    pub stats: Arc<OutputStats>,
    tx: mpsc::Sender<(Batch, Ack)>,
    task: JoinHandle<OutputReport>,
}

/// Waits for one submission's answer.
pub struct Pending(oneshot::Receiver<Result<(), Refused>>);

impl Pending {
    pub async fn wait(self) -> Result<(), Refused> {
        self.0
            .await
            .unwrap_or_else(|_| Err(Refused::Failed("the output stopped".into())))
    }

    /// Waits from outside the runtime (the CLI's thread).
    pub fn wait_blocking(self) -> Result<(), Refused> {
        self.0
            .blocking_recv()
            .unwrap_or_else(|_| Err(Refused::Failed("the output stopped".into())))
    }
}

impl OutputHandle {
    /// Starts the output's worker on the current runtime. The spool (if any) is opened here, so
    /// a bad directory fails at start, and what an earlier run left in it is drained first.
    pub fn start(
        name: String,
        encoding: Encoding,
        endpoint: Endpoint,
        spool: Option<SpoolSettings>,
        dead_letter_dir: Option<PathBuf>,
        queue: usize,
    ) -> Result<(OutputHandle, Option<u64>), OutputError> {
        let (spool, full, waiting) = match spool {
            Some(s) => {
                let (spool, recovery) = Spool::open(&s.dir, s.max_bytes, s.segment_bytes)
                    .map_err(|e| OutputError::Config(e.to_string()))?;
                (Some(spool), s.full, Some(recovery.pending))
            }
            None => (None, FullPolicy::Block, None),
        };
        let close_retries = match &endpoint {
            Endpoint::Syslog(t) => t.retries,
            Endpoint::Bulk(b) => b.retries(),
            Endpoint::File(_) => 0,
        };
        let sink = match endpoint {
            Endpoint::Syslog(mut t) => {
                // With a spool the worker paces retries itself (backing off without holding up
                // new batches); a send tries once more at most.
                if spool.is_some() {
                    t.retries = t.retries.min(1);
                }
                Sink::Syslog(t, None)
            }
            Endpoint::Bulk(mut b) => {
                if spool.is_some() {
                    b.limit_retries(1);
                }
                Sink::Bulk(*b)
            }
            Endpoint::File(t) => Sink::File(FileOutput::open(t)?),
        };
        let stats = Arc::new(OutputStats::default());
        let worker = Worker {
            stats: stats.clone(),
            report: OutputReport {
                name: name.clone(),
                ..OutputReport::default()
            },
            dead: DeadLetters::new(dead_letter_dir.as_deref(), &name),
            sink,
            spool,
            full,
            failures: 0,
            retry_at: None,
            close_retries,
        };
        let (tx, rx) = mpsc::channel(queue.max(1));
        let task = tokio::spawn(worker.run(rx));
        Ok((
            OutputHandle {
                name,
                encoding,
                stats,
                tx,
                task,
            },
            waiting,
        ))
    }

    /// Hands a batch over, waiting while the queue is full.
    pub async fn submit(&self, batch: Batch) -> Pending {
        let (ack, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, ack))) = self.tx.send((batch, ack)).await {
            let _ = ack.send(Err(Refused::Failed("the output stopped".into())));
        }
        Pending(rx)
    }

    /// Hands a batch over from outside the runtime (the CLI's thread): waits while the queue
    /// is full.
    pub fn submit_blocking(&self, batch: Batch) -> Pending {
        let (ack, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, ack))) = self.tx.blocking_send((batch, ack)) {
            let _ = ack.send(Err(Refused::Failed("the output stopped".into())));
        }
        Pending(rx)
    }

    /// Stops taking batches, drains the spool while the endpoint takes events, and reports.
    pub async fn close(self) -> OutputReport {
        let OutputHandle { name, tx, task, .. } = self;
        drop(tx);
        task.await.unwrap_or_else(|e| OutputReport {
            name,
            down: Some(format!("the output's task failed: {e}")),
            ..OutputReport::default()
        })
    }
}

struct Worker {
    stats: Arc<OutputStats>,
    report: OutputReport,
    sink: Sink,
    spool: Option<Spool>,
    dead: DeadLetters,
    full: FullPolicy,
    /// Failed attempts in a row, for the backoff.
    failures: u32,
    /// No new attempt before this, after a failure.
    retry_at: Option<Instant>,
    /// Failed drains waited out when closing before the rest is left in the spool.
    close_retries: u32,
}

/// Spooled events sent per attempt.
const DRAIN_BATCH: usize = 1000;
/// Batches taken under one sync, at most.
const GROUP: usize = 64;

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<(Batch, Ack)>) -> OutputReport {
        loop {
            let job = if self.can_drain() {
                match rx.try_recv() {
                    Ok(job) => Some(job),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                let wake = self.retry_at.filter(|_| self.backlog() > 0);
                tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => Some(job),
                        None => break,
                    },
                    _ = sleep_until(wake), if wake.is_some() => {
                        self.retry_at = None;
                        None
                    }
                }
            };
            match job {
                Some(first) => {
                    // Group commit: what else waits goes in with it, under one sync.
                    let mut jobs = vec![first];
                    while jobs.len() < GROUP {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    self.accept_group(jobs).await;
                }
                None => self.drain_once().await,
            }
            self.publish();
        }
        // Closing: the backlog goes while the endpoint takes it; failures are waited out with
        // the backoff up to the output's retry budget, then what is left stays spooled.
        self.retry_at = None;
        self.failures = 0;
        let mut failures = 0;
        while self.backlog() > 0 && failures <= self.close_retries {
            if let Some(t) = self.retry_at {
                tokio::time::sleep_until(t).await;
            }
            let before = self.failures;
            self.drain_once().await;
            if self.failures > before {
                failures += 1;
            }
        }
        if let Some(s) = &self.spool {
            self.report.pending = s.pending();
            self.report.dropped = s.dropped;
        }
        if self.report.pending == 0 {
            self.report.down = None;
        }
        self.publish();
        self.sink.close().await;
        self.report
    }

    fn publish(&self) {
        let s = &self.stats;
        let r = &self.report;
        let before = s.delivered.swap(r.delivered, Ordering::Relaxed);
        if r.delivered > before {
            s.last_success.store(unix_now(), Ordering::Relaxed);
        }
        s.bytes.store(r.bytes, Ordering::Relaxed);
        s.duplicates.store(r.duplicates, Ordering::Relaxed);
        s.dead_lettered.store(r.dead_lettered, Ordering::Relaxed);
        s.down.store(r.down.is_some(), Ordering::Relaxed);
        if let Some(spool) = &self.spool {
            s.dropped.store(spool.dropped, Ordering::Relaxed);
            s.pending.store(spool.pending(), Ordering::Relaxed);
            s.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
            s.spool_max_bytes
                .store(spool.bytes() + spool.room(), Ordering::Relaxed);
            let since = s.backlog_since.load(Ordering::Relaxed);
            if spool.pending() == 0 {
                s.backlog_since.store(0, Ordering::Relaxed);
            } else if since == 0 {
                s.backlog_since.store(unix_now(), Ordering::Relaxed);
            }
        }
    }

    fn backlog(&self) -> u64 {
        self.spool.as_ref().map_or(0, Spool::pending)
    }

    fn can_drain(&self) -> bool {
        self.backlog() > 0 && self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// Takes waiting batches: spooled and then synced once (with a spool), else sent and
    /// synced together; answers each.
    async fn accept_group(&mut self, jobs: Vec<(Batch, Ack)>) {
        let mut results = Vec::with_capacity(jobs.len());
        for (batch, _) in &jobs {
            results.push(self.admit(batch).await);
        }
        let synced = if let Some(spool) = self.spool.as_mut() {
            spool.sync().map_err(|e| e.to_string())
        } else {
            let events: Vec<&[u8]> = jobs
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .flat_map(|((b, _), _)| b.events.iter().map(Vec::as_slice))
                .collect();
            let (done, err) = self
                .sink
                .deliver(&events, &mut self.dead, &mut self.report)
                .await;
            match err {
                None if done == events.len() => Ok(()),
                e => Err(e.unwrap_or_else(|| "not every event was sent".into())),
            }
        };
        let synced = synced.and_then(|()| self.dead.sync().map_err(|e| e.to_string()));
        for ((_, ack), r) in jobs.into_iter().zip(results) {
            let r = match (&synced, r) {
                (Err(e), Ok(())) => Err(Refused::Failed(e.clone())),
                (_, r) => r,
            };
            self.stats
                .full
                .store(matches!(r, Err(Refused::Full(_))), Ordering::Relaxed);
            let _ = ack.send(r);
        }
    }

    /// Dead-letters a batch's refused events and, with a spool, appends its events (not yet
    /// synced), applying the full-spool policy.
    async fn admit(&mut self, batch: &Batch) -> Result<(), Refused> {
        self.report.trimmed += batch.trimmed;
        for (reason, meta) in &batch.refused {
            self.dead.add(reason, meta).map_err(|e| e.to_string())?;
            self.report.dead_lettered += 1;
        }
        if self.spool.is_none() {
            return Ok(());
        }
        if self.full == FullPolicy::DropOldest {
            return self
                .spool_dropping_oldest(&batch.events)
                .map_err(Refused::from);
        }
        let need: u64 = batch.events.iter().map(|e| Spool::stored_len(e)).sum();
        loop {
            let can_drain = self.can_drain();
            let Some(spool) = self.spool.as_mut() else {
                return Ok(());
            };
            if spool.room() >= need {
                for ev in &batch.events {
                    spool.append(ev).map_err(|e| e.to_string())?;
                }
                return Ok(());
            }
            if can_drain {
                self.drain_once().await;
                continue;
            }
            return Err(Refused::Full(format!(
                "the spool of {} is full ({} events waiting, {} of {} bytes; this batch needs {need}){}; nothing of this batch was accepted",
                self.report.name,
                spool.pending(),
                spool.bytes(),
                spool.bytes() + spool.room(),
                self.report
                    .down
                    .as_deref()
                    .map(|d| format!(" and the endpoint is down: {d}"))
                    .unwrap_or_default()
            )));
        }
    }

    /// The drop-oldest policy: each event that does not fit makes room by giving up about as
    /// many of the oldest events as are still to come (counted), this batch's own included.
    fn spool_dropping_oldest(&mut self, events: &[Vec<u8>]) -> Result<(), String> {
        let Some(spool) = self.spool.as_mut() else {
            return Ok(());
        };
        for (i, ev) in events.iter().enumerate() {
            loop {
                match spool.append(ev) {
                    Ok(_) => break,
                    Err(SpoolError::Full { .. }) if spool.pending() > 0 => {
                        let k = (events.len() - i) as u64;
                        spool.drop_oldest(k).map_err(|e| e.to_string())?;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        Ok(())
    }

    /// Sends one batch from the head of the spool and acknowledges what was done.
    async fn drain_once(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let batch = match spool.peek(DRAIN_BATCH) {
            Ok(b) => b,
            Err(e) => return self.failed(e.to_string()),
        };
        let events: Vec<&[u8]> = batch.iter().map(|(_, e)| e.as_slice()).collect();
        let (done, err) = self
            .sink
            .deliver(&events, &mut self.dead, &mut self.report)
            .await;
        if done > 0 {
            if let Some(spool) = self.spool.as_mut() {
                if let Err(e) = spool.ack(batch[done - 1].0 + 1) {
                    return self.failed(e.to_string());
                }
            }
        }
        match err {
            Some(e) => self.failed(e),
            None => {
                self.failures = 0;
                self.retry_at = None;
                self.report.down = None;
            }
        }
    }

    fn failed(&mut self, why: String) {
        self.failures += 1;
        self.retry_at = Some(Instant::now() + backoff(self.failures));
        self.report.down = Some(why);
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
