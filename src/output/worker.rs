//! An output's intake: the task behind a bounded queue that takes the producers' batches
//! (`translate`, the service's inputs); the encoding is in `batch`, the delivery to the
//! endpoint in `delivery` (with a spool) or done here (without one), through `sink`.
//!
//! A producer encodes its events for the output ([`Batch::add`]) and submits the batch; the
//! answer comes once the batch is durable: appended to the output's spool and synced, or, for
//! an output without a spool, sent. Only then may the producer acknowledge its own input. The
//! queue holds a few batches; when it is full, `submit_blocking` waits (backpressure).
//!
//! With a spool, intake and delivery are separate tasks: the intake never waits for the
//! endpoint, so a receiver that hangs (connection open, nothing read) or a slow cluster makes
//! events wait in the spool, never the producer. A full spool follows its policy: `block` waits
//! a moment for the delivery to make room while the endpoint is up and otherwise refuses the
//! batch whole (the producer stops or answers 503; nothing of the batch was accepted),
//! `drop-oldest` gives up the oldest spooled events, counted. A spool that cannot be written
//! (no space left, the directory turned unwritable) refuses the same way and takes batches again
//! by itself once the disk does; what it already holds is still delivered. Events refused for
//! good (by the endpoint, or too large to render) go to the output's dead letters, synced before
//! the spool lets go of them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use super::batch::{Batch, Encoding};
use super::bulk::BulkOutput;
use super::dead_letter::DeadLetters;
use super::delivery::{Delivery, Transitions};
use super::file::{FileOutput, FileTarget};
use super::sink::Sink;
use super::spool::{Spool, SpoolError};
use super::syslog::SyslogTarget;
use super::OutputError;

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
    /// One line for the run's summary, credentials in URLs redacted.
    pub fn line(&self) -> String {
        super::redact_userinfo(&self.unredacted_line()).into_owned()
    }

    fn unredacted_line(&self) -> String {
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
    /// The last batch was refused: the spool is full or cannot be written.
    pub refusing: AtomicBool,
    /// Why, while `down` or `refusing` (the later of the two reasons).
    pub problem: Mutex<String>,
    /// Times the endpoint went down, and times the intake started refusing, since start.
    pub down_transitions: AtomicU64,
    pub refusing_transitions: AtomicU64,
}

impl OutputStats {
    pub fn problem(&self) -> String {
        match self.problem.lock() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(super) fn set_problem(&self, why: &str) {
        let mut p = match self.problem.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        p.clear();
        p.push_str(&super::redact_userinfo(why));
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why an output did not take a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    /// Not now: the spool is full while the endpoint is not taking events, or the spool (or a
    /// file output's disk) cannot be written. Nothing of the batch was taken: try again later.
    #[error("{0}")]
    Unavailable(String),
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
    /// Starts the output's tasks on the current runtime. The spool (if any) is opened here, so
    /// a bad directory fails at start, and what an earlier run left in it is drained first.
    pub fn start(
        name: String,
        encoding: Encoding,
        endpoint: Endpoint,
        spool: Option<SpoolSettings>,
        dead_letter_dir: Option<PathBuf>,
        queue: usize,
    ) -> Result<(OutputHandle, Option<u64>), OutputError> {
        let close_retries = match &endpoint {
            Endpoint::Syslog(t) => t.retries,
            Endpoint::Bulk(b) => b.retries(),
            Endpoint::File(_) => 0,
        };
        let spooled = spool.is_some();
        let sink = match endpoint {
            Endpoint::Syslog(mut t) => {
                // With a spool the delivery task paces retries itself (backing off without
                // holding up new batches): a batch is sent once per attempt.
                if spooled {
                    t.retries = 0;
                }
                Sink::Syslog(t, None)
            }
            Endpoint::Bulk(mut b) => {
                if spooled {
                    b.limit_retries(1);
                }
                Sink::Bulk(*b)
            }
            Endpoint::File(t) => Sink::File(FileOutput::open(t)?),
        };
        let stats = Arc::new(OutputStats::default());
        let dead = || DeadLetters::new(dead_letter_dir.as_deref(), &name);
        let (tx, rx) = mpsc::channel(queue.max(1));
        let (task, waiting) = match spool {
            Some(s) => {
                let (spool, recovery) = Spool::open(&s.dir, s.max_bytes, s.segment_bytes)
                    .map_err(|e| OutputError::Config(e.to_string()))?;
                let figures = AtomicFigures::default();
                figures.record(&spool);
                let shared = Arc::new(Shared {
                    name: name.clone(),
                    stats: stats.clone(),
                    spool: Mutex::new(spool),
                    figures,
                    wake: Notify::new(),
                    closing: AtomicBool::new(false),
                    intake_dead: AtomicU64::new(0),
                    trimmed: AtomicU64::new(0),
                });
                shared.publish_spool();
                let delivery = Delivery::new(shared.clone(), sink, dead(), close_retries);
                let delivery = tokio::spawn(delivery.run());
                let intake = Intake {
                    shared,
                    full: s.full,
                    dead: dead(),
                    refusing: Transitions::new(&name, "intake"),
                };
                (
                    tokio::spawn(intake.run(rx, delivery)),
                    Some(recovery.pending),
                )
            }
            None => {
                let direct = Direct {
                    name: name.clone(),
                    stats: stats.clone(),
                    sink,
                    dead: dead(),
                    report: OutputReport {
                        name: name.clone(),
                        ..OutputReport::default()
                    },
                    health: Transitions::new(&name, "output"),
                };
                (tokio::spawn(direct.run(rx)), None)
            }
        };
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

/// A spool's figures, kept in atomics for the async side.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SpoolFigures {
    pub(super) pending: u64,
    pub(super) deliverable: u64,
    pub(super) bytes: u64,
    pub(super) room: u64,
    pub(super) dropped: u64,
}

#[derive(Default)]
struct AtomicFigures([AtomicU64; 5]);

impl AtomicFigures {
    fn record(&self, s: &Spool) {
        let values = [s.pending(), s.deliverable(), s.bytes(), s.room(), s.dropped];
        for (a, v) in self.0.iter().zip(values) {
            a.store(v, Ordering::Relaxed);
        }
    }

    fn load(&self) -> SpoolFigures {
        let [pending, deliverable, bytes, room, dropped] =
            self.0.each_ref().map(|a| a.load(Ordering::Relaxed));
        SpoolFigures {
            pending,
            deliverable,
            bytes,
            room,
            dropped,
        }
    }
}

/// What the intake and the delivery task of a spooled output share.
pub(super) struct Shared {
    pub(super) name: String,
    pub(super) stats: Arc<OutputStats>,
    spool: Mutex<Spool>,
    figures: AtomicFigures,
    /// New durable events, or closing: wakes the delivery task.
    pub(super) wake: Notify,
    pub(super) closing: AtomicBool,
    /// Counted by the intake: events dead-lettered because they could not be encoded, and LEEF
    /// events trimmed to fit.
    pub(super) intake_dead: AtomicU64,
    pub(super) trimmed: AtomicU64,
}

impl Shared {
    /// Runs `f` on the spool and records its figures. Spool work reads and writes files (an
    /// fsync may take long on a slow disk), so it runs on blocking threads only, and async code
    /// reads the figures ([`Shared::figures`]) instead of taking the lock.
    pub(super) fn with_spool<T>(&self, f: impl FnOnce(&mut Spool) -> T) -> T {
        let mut spool = match self.spool.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let r = f(&mut spool);
        self.figures.record(&spool);
        r
    }

    /// The spool's figures as of its last use.
    pub(super) fn figures(&self) -> SpoolFigures {
        self.figures.load()
    }

    /// The spool's figures into the stats.
    pub(super) fn publish_spool(&self) {
        let SpoolFigures {
            pending,
            bytes,
            room,
            dropped,
            ..
        } = self.figures();
        let st = &self.stats;
        st.dropped.store(dropped, Ordering::Relaxed);
        st.pending.store(pending, Ordering::Relaxed);
        st.spool_bytes.store(bytes, Ordering::Relaxed);
        st.spool_max_bytes.store(bytes + room, Ordering::Relaxed);
        if pending == 0 {
            st.backlog_since.store(0, Ordering::Relaxed);
        } else if st.backlog_since.load(Ordering::Relaxed) == 0 {
            st.backlog_since.store(unix_now(), Ordering::Relaxed);
        }
    }
}

/// Batches taken under one sync, at most.
const GROUP: usize = 64;
/// How long a batch waits for room in a full `block` spool while the endpoint takes events.
const FULL_WAIT: Duration = Duration::from_secs(2);

/// Takes batches into the spool (see the module's comment).
struct Intake {
    shared: Arc<Shared>,
    full: FullPolicy,
    dead: DeadLetters,
    refusing: Transitions,
}

impl Intake {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<(Batch, Ack)>,
        delivery: JoinHandle<OutputReport>,
    ) -> OutputReport {
        while let Some(first) = rx.recv().await {
            let jobs = group(first, &mut rx);
            self.accept(jobs).await;
        }
        self.shared.closing.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
        delivery.await.unwrap_or_else(|e| OutputReport {
            name: self.shared.name.clone(),
            down: Some(format!("the output's delivery task failed: {e}")),
            ..OutputReport::default()
        })
    }

    /// Spools the waiting batches under one sync and answers each. The events a batch could
    /// not encode are dead-lettered once its events are spooled (a batch refused now comes back,
    /// and would otherwise leave its dead letters twice).
    async fn accept(&mut self, jobs: Vec<(Batch, Ack)>) {
        let (batches, acks): (Vec<Batch>, Vec<Ack>) = jobs.into_iter().unzip();
        if self.full == FullPolicy::Block {
            let need: u64 = batches
                .iter()
                .flat_map(|b| &b.events)
                .map(|e| Spool::stored_len(e))
                .sum();
            self.wait_for_room(need).await;
        }
        let shared = self.shared.clone();
        let full = self.full;
        let spooled = tokio::task::spawn_blocking(move || {
            let mut results = vec![Ok(()); batches.len()];
            spool_all(&shared, full, &batches, &mut results);
            (batches, results)
        })
        .await;
        let (batches, mut results) = match spooled {
            Ok(r) => r,
            Err(e) => {
                let why = Refused::Failed(format!("spooling stopped: {e}"));
                for ack in acks {
                    let _ = ack.send(Err(why.clone()));
                }
                return;
            }
        };
        for (batch, r) in batches.iter().zip(results.iter_mut()) {
            if r.is_ok() {
                *r = dead_letter_refused(batch, &mut self.dead, &self.shared.intake_dead);
                self.shared
                    .trimmed
                    .fetch_add(batch.trimmed, Ordering::Relaxed);
            }
        }
        if let Err(e) = self.dead.sync() {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(Refused::Failed(e.to_string()));
            }
        }
        self.shared.publish_spool();
        self.shared.wake.notify_one();
        let refusal = results.iter().find_map(|r| match r {
            Err(Refused::Unavailable(why)) => Some(why.clone()),
            _ => None,
        });
        self.refusing.catch_up();
        let stats = &self.shared.stats;
        match &refusal {
            Some(why) => {
                if self.refusing.down(why, "refusing new events (503)") {
                    stats.refusing_transitions.fetch_add(1, Ordering::Relaxed);
                }
                stats.set_problem(why);
            }
            None => {
                self.refusing.up();
            }
        }
        stats.refusing.store(refusal.is_some(), Ordering::Relaxed);
        for (ack, r) in acks.into_iter().zip(results) {
            let _ = ack.send(r);
        }
    }

    /// A `block` spool without room for `need` bytes: waits (at most [`FULL_WAIT`]) while the
    /// endpoint is up and the delivery is making room.
    async fn wait_for_room(&self, need: u64) {
        let deadline = Instant::now() + FULL_WAIT;
        loop {
            let SpoolFigures {
                room, deliverable, ..
            } = self.shared.figures();
            if room >= need
                || deliverable == 0
                || self.shared.stats.down.load(Ordering::Relaxed)
                || Instant::now() >= deadline
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Takes what else waits in the queue with `first`, up to [`GROUP`] batches.
fn group(first: (Batch, Ack), rx: &mut mpsc::Receiver<(Batch, Ack)>) -> Vec<(Batch, Ack)> {
    let mut jobs = vec![first];
    while jobs.len() < GROUP {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    jobs
}

/// Dead-letters a batch's events that could not be encoded.
fn dead_letter_refused(
    batch: &Batch,
    dead: &mut DeadLetters,
    count: &AtomicU64,
) -> Result<(), Refused> {
    for (reason, meta) in &batch.refused {
        dead.add(reason, meta).map_err(|e| e.to_string())?;
        count.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Appends the batches still `Ok` in `results` and syncs them. A batch that does not fit is
/// refused alone; a write or sync that fails rolls back every batch not yet durable, so all of
/// this group that was not refused already is refused with it.
fn spool_all(
    shared: &Shared,
    full: FullPolicy,
    batches: &[Batch],
    results: &mut [Result<(), Refused>],
) {
    shared.with_spool(|spool| spool_into(spool, shared, full, batches, results));
}

fn spool_into(
    spool: &mut Spool,
    shared: &Shared,
    full: FullPolicy,
    batches: &[Batch],
    results: &mut [Result<(), Refused>],
) {
    let unwritable = |e: &SpoolError| {
        Refused::Unavailable(format!(
            "the spool of {} cannot be written ({e}); nothing of this batch was accepted",
            shared.name
        ))
    };
    let mut failed = None;
    for (batch, r) in batches.iter().zip(results.iter_mut()) {
        if r.is_err() {
            continue;
        }
        let outcome = match full {
            FullPolicy::Block => append_if_room(spool, &shared.name, &batch.events, &shared.stats),
            FullPolicy::DropOldest => append_dropping_oldest(spool, &batch.events),
        };
        match outcome {
            Ok(()) => {}
            Err(Appended::Refused(why)) => *r = Err(why),
            Err(Appended::Io(e)) => {
                failed = Some(unwritable(&e));
                break;
            }
        }
    }
    if failed.is_none() {
        if let Err(e) = spool.sync() {
            failed = Some(unwritable(&e));
        }
    }
    if let Some(why) = failed {
        // Whatever this group appended is forgotten (an append or sync that failed did so
        // already; a failed drop-oldest did not).
        spool.roll_back();
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(why.clone());
        }
    }
}

enum Appended {
    /// This batch alone is refused.
    Refused(Refused),
    /// The spool could not be written: what was not durable is rolled back.
    Io(SpoolError),
}

fn append_if_room(
    spool: &mut Spool,
    name: &str,
    events: &[Vec<u8>],
    stats: &OutputStats,
) -> Result<(), Appended> {
    if let Some(e) = events.iter().find(|e| !spool.takes(e.len())) {
        return Err(Appended::Refused(Refused::Failed(format!(
            "an event of {} bytes is larger than a spool segment of {name} may hold (spool_segment_bytes); nothing of this batch was accepted",
            e.len()
        ))));
    }
    let need: u64 = events.iter().map(|e| Spool::stored_len(e)).sum();
    if spool.room() < need {
        let down = stats.down.load(Ordering::Relaxed);
        return Err(Appended::Refused(Refused::Unavailable(format!(
            "the spool of {name} is full ({} events waiting, {} of {} bytes; this batch needs {need}){}; nothing of this batch was accepted",
            spool.pending(),
            spool.bytes(),
            spool.bytes() + spool.room(),
            if down { format!(" and the endpoint is down: {}", stats.problem()) } else { String::new() }
        ))));
    }
    for ev in events {
        match spool.append(ev) {
            Ok(_) => {}
            Err(e @ SpoolError::TooLarge { .. }) => {
                return Err(Appended::Refused(Refused::Failed(e.to_string())))
            }
            Err(e) => return Err(Appended::Io(e)),
        }
    }
    Ok(())
}

/// The drop-oldest policy: each event that does not fit makes room by giving up about as
/// many of the oldest events as are still to come (counted), this batch's own included (made
/// durable first, as only durable events are dropped).
fn append_dropping_oldest(spool: &mut Spool, events: &[Vec<u8>]) -> Result<(), Appended> {
    if let Some(e) = events.iter().find(|e| !spool.takes(e.len())) {
        return Err(Appended::Refused(Refused::Failed(format!(
            "an event of {} bytes is larger than a spool segment may hold (spool_segment_bytes); nothing of this batch was accepted",
            e.len()
        ))));
    }
    for (i, ev) in events.iter().enumerate() {
        loop {
            match spool.append(ev) {
                Ok(_) => break,
                Err(SpoolError::Full { .. }) if spool.deliverable() > 0 => {
                    let k = (events.len() - i) as u64;
                    spool.drop_oldest(k).map_err(Appended::Io)?;
                }
                Err(SpoolError::Full { .. }) if spool.pending() > 0 => {
                    spool.sync().map_err(Appended::Io)?;
                }
                Err(e @ (SpoolError::Full { .. } | SpoolError::TooLarge { .. })) => {
                    return Err(Appended::Refused(Refused::Failed(e.to_string())))
                }
                Err(e) => return Err(Appended::Io(e)),
            }
        }
    }
    Ok(())
}

/// An output without a spool (a file): each group of batches is delivered before it is
/// answered.
struct Direct {
    name: String,
    stats: Arc<OutputStats>,
    sink: Sink,
    dead: DeadLetters,
    report: OutputReport,
    health: Transitions,
}

impl Direct {
    async fn run(mut self, mut rx: mpsc::Receiver<(Batch, Ack)>) -> OutputReport {
        while let Some(first) = rx.recv().await {
            let jobs = group(first, &mut rx);
            self.accept(jobs).await;
        }
        self.sink.close().await;
        self.report
    }

    async fn accept(&mut self, jobs: Vec<(Batch, Ack)>) {
        let intake_dead = AtomicU64::new(0);
        let mut results: Vec<Result<(), Refused>> = jobs
            .iter()
            .map(|(b, _)| dead_letter_refused(b, &mut self.dead, &intake_dead))
            .collect();
        self.report.dead_lettered += intake_dead.load(Ordering::Relaxed);
        self.report.trimmed += jobs.iter().map(|(b, _)| b.trimmed).sum::<u64>();
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
        let outcome = match err {
            None if done == events.len() => self.dead.sync().map_err(|e| e.to_string()),
            e => Err(e.unwrap_or_else(|| "not every event was written".into())),
        };
        self.health.catch_up();
        match &outcome {
            Ok(()) => {
                self.health.up();
                self.stats.down.store(false, Ordering::Relaxed);
            }
            Err(why) => {
                if self
                    .health
                    .down(why, "batches are refused (503) until it writes again")
                {
                    self.stats.down_transitions.fetch_add(1, Ordering::Relaxed);
                }
                self.stats.set_problem(why);
                self.stats.down.store(true, Ordering::Relaxed);
                let why = Refused::Unavailable(format!(
                    "output {} could not write: {why}; nothing of this batch was accepted",
                    self.name
                ));
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(why.clone());
                }
            }
        }
        let st = &self.stats;
        let before = st.delivered.swap(self.report.delivered, Ordering::Relaxed);
        if self.report.delivered > before {
            st.last_success.store(unix_now(), Ordering::Relaxed);
        }
        st.bytes.store(self.report.bytes, Ordering::Relaxed);
        st.dead_lettered
            .store(self.report.dead_lettered, Ordering::Relaxed);
        for ((_, ack), r) in jobs.into_iter().zip(results) {
            let _ = ack.send(r);
        }
    }
}
