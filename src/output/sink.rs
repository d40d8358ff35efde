//! `Sink`: delivery of a batch of encoded events to a syslog receiver, a cluster or a file, with
//! what each refused for good handed to the dead letters.

use super::bulk::{BulkOutput, ItemResult};
use super::dead_letter::DeadLetters;
use super::file::FileOutput;
use super::syslog::{SyslogOutput, SyslogTarget};
use super::worker::OutputReport;
use super::{backoff, OutputError};

/// The endpoint an output's worker delivers to.
pub(super) enum Sink {
    Syslog(SyslogTarget, Option<SyslogOutput>),
    Bulk(BulkOutput),
    File(FileOutput),
}

impl Sink {
    /// Delivers `events` in order. Returns how many from the front are done (delivered, or
    /// refused for good and dead-lettered) and, if it stopped early, why.
    pub(super) async fn deliver(
        &mut self,
        events: &[&[u8]],
        dead: &mut DeadLetters,
        report: &mut OutputReport,
    ) -> (usize, Option<String>) {
        match self {
            Sink::Syslog(target, conn) => {
                // What went into a connection that then failed is not known to have arrived:
                // the whole batch is sent again on a new one (at least once), `retries` times
                // at most after a jittered backoff.
                let mut attempt = 0;
                loop {
                    match send_all(target, conn, events).await {
                        Ok(()) => {
                            report.delivered += events.len() as u64;
                            report.bytes += events.iter().map(|e| e.len() as u64).sum::<u64>();
                            return (events.len(), None);
                        }
                        Err(e) => {
                            if let Some(c) = conn.take() {
                                report.reconnects += c.reconnects + 1;
                            }
                            attempt += 1;
                            if attempt > target.retries {
                                return (0, Some(e.to_string()));
                            }
                            tokio::time::sleep(backoff(attempt)).await;
                        }
                    }
                }
            }
            Sink::Bulk(out) => {
                let mut done = Vec::with_capacity(events.len());
                let result = out.send(events, &mut done).await;
                for (entry, r) in events.iter().zip(&done) {
                    match r {
                        ItemResult::Delivered => {
                            report.delivered += 1;
                            report.bytes += super::bulk::wire_part(entry).len() as u64;
                        }
                        ItemResult::Duplicate => {
                            report.delivered += 1;
                            report.duplicates += 1;
                        }
                        ItemResult::Rejected(reason) => {
                            let meta = entry.splitn(3, |&b| b == b'\n').nth(2).unwrap_or_default();
                            if let Err(e) = dead.add(reason, meta) {
                                return (0, Some(e.to_string()));
                            }
                            report.dead_lettered += 1;
                        }
                    }
                }
                if let Err(e) = dead.sync() {
                    return (0, Some(e.to_string()));
                }
                (done.len(), result.err().map(|e| e.to_string()))
            }
            Sink::File(out) => {
                let written = events
                    .iter()
                    .try_for_each(|ev| out.write_line(ev))
                    .and_then(|()| out.sync());
                match written {
                    Ok(()) => {
                        report.delivered += events.len() as u64;
                        report.bytes += events.iter().map(|e| e.len() as u64).sum::<u64>();
                        (events.len(), None)
                    }
                    Err(e) => (0, Some(e.to_string())),
                }
            }
        }
    }

    pub(super) async fn close(self) {
        if let Sink::Syslog(_, Some(c)) = self {
            let _ = c.close().await;
        }
    }
}

/// Sends a batch on the open connection (opened first if there is none) and flushes it.
async fn send_all(
    target: &SyslogTarget,
    conn: &mut Option<SyslogOutput>,
    events: &[&[u8]],
) -> Result<(), OutputError> {
    if conn.is_none() {
        *conn = Some(SyslogOutput::connect(target.clone()).await?);
    }
    let Some(out) = conn.as_mut() else {
        return Err(OutputError::Config("no connection".into()));
    };
    out.ensure_open().await?;
    for ev in events {
        out.send(ev).await?;
    }
    out.flush().await
}
