//! `Delivery`: the task that sends a spooled output's events to its endpoint, in order, while
//! the intake (`worker`) goes on taking batches: a head batch is read from the spool, sent
//! without holding the spool, and acknowledged; after a failure it waits a jittered, growing
//! backoff before it tries again. Each change between up and down is logged (`Transitions`)
//! and counted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::backoff;
use super::dead_letter::DeadLetters;
use super::sink::Sink;
use super::worker::{unix_now, OutputReport, Shared};

/// Spooled events sent per attempt, at most: by count, and by bytes (at least one event).
const DRAIN_EVENTS: usize = 1000;
const DRAIN_BYTES: usize = 16 << 20;

pub(super) struct Delivery {
    shared: Arc<Shared>,
    sink: Sink,
    dead: DeadLetters,
    report: OutputReport,
    /// Failed attempts in a row, for the backoff.
    failures: u32,
    /// No new attempt before this, after a failure.
    retry_at: Option<Instant>,
    /// Failed drains waited out when closing before the rest is left in the spool.
    close_retries: u32,
    health: Transitions,
    /// Whether the spool could save its delivery position.
    position: Transitions,
    /// Events delivered since the endpoint came back, until the backlog is gone.
    since_recovery: Option<u64>,
}

impl Delivery {
    pub(super) fn new(
        shared: Arc<Shared>,
        sink: Sink,
        dead: DeadLetters,
        close_retries: u32,
    ) -> Delivery {
        let health = Transitions::new(&shared.name, "output");
        let position = Transitions::new(&shared.name, "spool position");
        Delivery {
            report: OutputReport {
                name: shared.name.clone(),
                ..OutputReport::default()
            },
            shared,
            sink,
            dead,
            failures: 0,
            retry_at: None,
            close_retries,
            health,
            position,
            since_recovery: None,
        }
    }

    pub(super) async fn run(mut self) -> OutputReport {
        // Closing: the backlog goes while the endpoint takes it; failures are waited out with
        // the backoff up to the output's retry budget, then what is left stays spooled.
        let mut close_failures = 0;
        loop {
            let closing = self.shared.closing.load(Ordering::Relaxed);
            let waiting = self.shared.figures().deliverable;
            self.health.catch_up();
            self.position.catch_up();
            if waiting == 0 {
                if closing {
                    break;
                }
                // Woken by new events, or after the quiet time to log a state left unlogged.
                let _ = tokio::time::timeout(QUIET, self.shared.wake.notified()).await;
                continue;
            }
            if closing && close_failures > self.close_retries {
                break;
            }
            if let Some(t) = self.retry_at.take() {
                tokio::time::sleep_until(t).await;
            }
            if !self.drain_once().await && closing {
                close_failures += 1;
            }
        }
        let figures = self.shared.figures();
        self.report.pending = figures.pending;
        self.report.dropped = figures.dropped;
        if self.report.pending == 0 {
            self.report.down = None;
        }
        self.publish();
        self.report.dead_lettered += self.shared.intake_dead.load(Ordering::Relaxed);
        self.report.trimmed += self.shared.trimmed.load(Ordering::Relaxed);
        self.sink.close().await;
        self.report
    }

    /// Sends one batch from the head of the spool and acknowledges what was done; false when
    /// it failed.
    async fn drain_once(&mut self) -> bool {
        let shared = self.shared.clone();
        let peeked = tokio::task::spawn_blocking(move || {
            shared.with_spool(|s| s.peek(DRAIN_EVENTS, DRAIN_BYTES))
        })
        .await;
        let batch = match peeked {
            Ok(Ok(b)) if b.is_empty() => {
                return self.failed(
                    "the spool has events to deliver but none to read at its position".into(),
                )
            }
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return self.failed(e.to_string()),
            Err(e) => return self.failed(format!("reading the spool stopped: {e}")),
        };
        let events: Vec<&[u8]> = batch.iter().map(|(_, e)| e.as_slice()).collect();
        let before = self.report.delivered;
        let (done, err) = self
            .sink
            .deliver(&events, &mut self.dead, &mut self.report)
            .await;
        if done > 0 {
            let upto = batch[done - 1].0 + 1;
            let shared = self.shared.clone();
            let acked =
                tokio::task::spawn_blocking(move || shared.with_spool(|s| s.ack(upto))).await;
            // The spool moves on even when it cannot save the position: delivery goes on.
            match acked {
                Ok(Ok(())) => {
                    self.position.up();
                }
                Ok(Err(e)) => {
                    self.position.down(
                        &e.to_string(),
                        "delivery goes on; after a restart the events since would be sent again",
                    );
                }
                Err(e) => return self.failed(format!("acknowledging stopped: {e}")),
            }
        }
        let ok = match err {
            Some(e) => self.failed(e),
            None => {
                self.failures = 0;
                self.report.down = None;
                if self.health.up() {
                    self.since_recovery = Some(0);
                }
                true
            }
        };
        if let Some(n) = self.since_recovery.as_mut() {
            *n += self.report.delivered - before;
        }
        self.publish();
        if let Some(n) = self
            .since_recovery
            .filter(|_| self.shared.figures().pending == 0)
        {
            tracing::info!(output = %self.shared.name, delivered = n, "backlog delivered since the output came back");
            self.since_recovery = None;
        }
        ok
    }

    fn failed(&mut self, why: String) -> bool {
        self.failures += 1;
        self.retry_at = Some(Instant::now() + backoff(self.failures));
        let stats = &self.shared.stats;
        if self.health.down(&why, "events wait in the spool") {
            stats.down_transitions.fetch_add(1, Ordering::Relaxed);
        }
        stats.set_problem(&why);
        self.report.down = Some(why);
        self.publish();
        false
    }

    fn publish(&self) {
        let s = &self.shared.stats;
        let r = &self.report;
        let before = s.delivered.swap(r.delivered, Ordering::Relaxed);
        if r.delivered > before {
            s.last_success.store(unix_now(), Ordering::Relaxed);
        }
        s.bytes.store(r.bytes, Ordering::Relaxed);
        s.duplicates.store(r.duplicates, Ordering::Relaxed);
        s.dead_lettered.store(
            r.dead_lettered + self.shared.intake_dead.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        s.down.store(r.down.is_some(), Ordering::Relaxed);
        self.shared.publish_spool();
    }
}

/// The up/down state of one part of an output, logged once per change (WARN going down, with
/// the reason; INFO coming back, with how long it was down). Changes closer together than
/// [`QUIET`] to the last logged one (a receiver that takes a few events after each reconnect
/// and then hangs again) are not logged one by one: the state is logged again once the quiet
/// time is over ([`Transitions::catch_up`]), saying how many changes were not logged.
pub(super) struct Transitions {
    output: String,
    part: &'static str,
    down_since: Option<Instant>,
    /// The last reason it went down, and how long it was down the last time.
    why: String,
    down_for: Duration,
    last_logged: Option<Instant>,
    /// Changes not logged since the last line; the state then is still to be logged.
    unlogged: u64,
}

/// The least time between two logged changes of one output's state.
pub(super) const QUIET: Duration = Duration::from_secs(10);

impl Transitions {
    pub(super) fn new(output: &str, part: &'static str) -> Transitions {
        Transitions {
            output: output.to_string(),
            part,
            down_since: None,
            why: String::new(),
            down_for: Duration::ZERO,
            last_logged: None,
            unlogged: 0,
        }
    }

    /// It failed: true when it was up until now.
    pub(super) fn down(&mut self, why: &str, meanwhile: &str) -> bool {
        if self.down_since.is_some() {
            return false;
        }
        self.down_since = Some(Instant::now());
        self.why = format!("{}; {meanwhile}", super::redact_userinfo(why));
        self.changed();
        true
    }

    /// It worked: true when it was down until now.
    pub(super) fn up(&mut self) -> bool {
        let Some(since) = self.down_since.take() else {
            return false;
        };
        self.down_for = since.elapsed();
        self.changed();
        true
    }

    fn changed(&mut self) {
        if self.last_logged.is_some_and(|t| t.elapsed() < QUIET) {
            self.unlogged += 1;
        } else {
            self.log();
        }
    }

    /// Logs the state now if changes were left unlogged and the quiet time is over.
    pub(super) fn catch_up(&mut self) {
        if self.unlogged > 0 && self.last_logged.is_none_or(|t| t.elapsed() >= QUIET) {
            self.log();
        }
    }

    fn log(&mut self) {
        let unlogged = std::mem::take(&mut self.unlogged);
        self.last_logged = Some(Instant::now());
        let (output, part) = (&self.output, self.part);
        if self.down_since.is_some() {
            tracing::warn!(%output, part, reason = %self.why, unlogged_changes = unlogged, "{part} down");
        } else {
            let down_seconds = self.down_for.as_secs();
            tracing::info!(%output, part, down_seconds, unlogged_changes = unlogged, "{part} up");
        }
    }
}
