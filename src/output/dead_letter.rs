//! `DeadLetters`: events an output refused for good (a 400 mapping error from the cluster, a
//! LEEF event too large for the receiver even trimmed), kept with the reason, family, mapping
//! version and the raw record, so `replay-dead-letters` can translate and send them again
//! after a fix.
//!
//! One NDJSON file per output under `<data dir>/dead-letters/`, appended and synced before the
//! spool acknowledges the events, so a refused event is in one place or the other, never lost.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::OutputError;
use crate::event::{RawRecord, SourceKind};
use crate::mapping::time::Timestamp;
use crate::mapping::MappedEvent;

/// Appends the metadata of an event, as one JSON object line ending in `\n`: family, source,
/// mapping version, position and the raw record.
pub fn encode_meta(ev: &MappedEvent, rec: &RawRecord, mapping_version: &str, out: &mut Vec<u8>) {
    let meta = serde_json::json!({
        "family": ev.family.map(|f| f.name.as_str()),
        "source": ev.source.or(rec.source).map(SourceKind::as_str),
        "mapping_version": mapping_version,
        "position": rec.position.to_string(),
    })
    .to_string();
    out.extend_from_slice(&meta.as_bytes()[..meta.len() - 1]);
    out.extend_from_slice(b",\"record\":");
    rec.payload.write(out);
    out.extend_from_slice(b"}\n");
}

/// Where one output's dead letters go: a file in the data directory, or, without one, stderr
/// (so that nothing is dropped silently).
pub struct DeadLetters {
    output: String,
    path: Option<PathBuf>,
    file: Option<File>,
    pub written: u64,
}

impl DeadLetters {
    pub fn new(dir: Option<&Path>, output: &str) -> DeadLetters {
        DeadLetters {
            output: output.to_string(),
            path: dir.map(|d| d.join(format!("{}.ndjson", super::dir_name(output)))),
            file: None,
            written: 0,
        }
    }

    /// Records one refused event; `meta` is its metadata line from [`encode_meta`].
    pub fn add(&mut self, reason: &str, meta: &[u8]) -> Result<(), OutputError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let head = serde_json::json!({
            "time": Timestamp::from_unix_nanos(now).iso_millis(),
            "output": self.output,
            "reason": reason,
        })
        .to_string();
        let meta = meta.strip_suffix(b"\n").unwrap_or(meta);
        let mut line = Vec::with_capacity(head.len() + meta.len() + 2);
        line.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        if meta.len() > 2 {
            line.push(b',');
            line.extend_from_slice(&meta[1..]);
        } else {
            line.push(b'}');
        }
        line.push(b'\n');
        self.written += 1;
        let Some(path) = &self.path else {
            eprint!("dead letter: {}", String::from_utf8_lossy(&line));
            return Ok(());
        };
        let io = |source| OutputError::Io {
            target: path.display().to_string(),
            source,
        };
        if self.file.is_none() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io)?;
            self.file = Some(f);
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(&line).map_err(io)?;
        }
        Ok(())
    }

    /// Makes what was added durable (before the spool lets go of the events).
    pub fn sync(&mut self) -> Result<(), OutputError> {
        match (&self.file, &self.path) {
            (Some(f), Some(path)) => f.sync_data().map_err(|source| OutputError::Io {
                target: path.display().to_string(),
                source,
            }),
            _ => Ok(()),
        }
    }
}

/// One dead letter read back.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Where it is: `file:line`.
    pub place: String,
    pub output: String,
    pub reason: String,
    pub source: Option<SourceKind>,
    /// The raw record, as JSON text.
    pub record: String,
    /// The line as it was read.
    pub line: String,
}

/// Reads a dead-letter file; a line that is not a dead letter is an error naming it.
pub fn read(path: &Path) -> Result<Vec<DeadLetter>, OutputError> {
    let io = |source| OutputError::Io {
        target: path.display().to_string(),
        source,
    };
    let mut letters = Vec::new();
    for (i, line) in BufReader::new(File::open(path).map_err(io)?)
        .lines()
        .enumerate()
    {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let place = format!("{}:{}", path.display(), i + 1);
        let bad = |why: &str| OutputError::Config(format!("{place}: {why}"));
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| bad(&format!("not JSON ({e})")))?;
        let text = |key: &str| v.get(key).and_then(|s| s.as_str()).map(str::to_string);
        let record = v
            .get("record")
            .ok_or_else(|| bad("no `record`"))?
            .to_string();
        letters.push(DeadLetter {
            output: text("output").ok_or_else(|| bad("no `output`"))?,
            reason: text("reason").unwrap_or_default(),
            source: text("source").and_then(|s| s.parse().ok()),
            record,
            place,
            line,
        });
    }
    Ok(letters)
}
