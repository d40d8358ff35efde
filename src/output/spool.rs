//! `Spool`: the durable on-disk queue in front of an output. Events wait here while their
//! endpoint is down or slow, survive a restart (also `kill -9`), and drain in order.
//!
//! A segment log, written here rather than taken from an embedded database: the access pattern
//! is strictly append at the tail and read and delete at the head, which a log serves with
//! sequential I/O and no compaction, and its recovery rule is simple enough to test whole.
//!
//! Layout of the spool directory:
//! - `<first sequence number, 20 digits>.seg`: records `[length u32 LE][CRC-32 u32 LE][bytes]`;
//!   a new segment starts when the current one passes the segment size;
//! - `ack`: the sequence number of the first record not yet delivered, replaced atomically
//!   (write, fsync, rename).
//!
//! Recovery on open: records are read from the acknowledged position; a record cut short or
//! failing its CRC at the end of the last segment is a torn write (the process died while
//! appending, before that record was synced and acknowledged to its producer) and is cut off.
//! Anywhere else it is damage: the records after it in that segment are counted as lost and
//! reading goes on with the next segment.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    /// Appending would pass the size limit: the caller applies its policy (wait, or drop the
    /// oldest records with `drop_oldest`).
    #[error("spool {dir} is full ({bytes} of {max} bytes)")]
    Full { dir: String, bytes: u64, max: u64 },
    #[error("spool {dir}: an event of {len} bytes is larger than a segment may hold")]
    TooLarge { dir: String, len: usize },
}

/// What recovery found on open.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records waiting to be delivered.
    pub pending: u64,
    /// Bytes cut off the end of the last segment (a torn append).
    pub torn_bytes: u64,
    /// Segments in which damage (not a torn tail) ended reading early: the records after it in
    /// that segment are lost.
    pub damaged: u64,
}

struct Segment {
    first: u64,
    path: PathBuf,
    /// Sequence numbers of its records, in order, with their byte offsets.
    offsets: Vec<u64>,
    bytes: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: Vec<Segment>,
    writer: Option<BufWriter<File>>,
    /// Next sequence number to append.
    next: u64,
    /// First sequence number not yet acknowledged.
    acked: u64,
    /// Records dropped by `drop_oldest` since open.
    pub dropped: u64,
}

impl Spool {
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> Result<(Spool, Recovery), SpoolError> {
        let io = |source| SpoolError::Io {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let acked = match std::fs::read_to_string(dir.join("ack")) {
            Ok(t) => t.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(e)),
        };
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse::<u64>().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut recovery = Recovery::default();
        let mut segments = Vec::new();
        let last = firsts.len().saturating_sub(1);
        for (i, first) in firsts.iter().copied().enumerate() {
            let path = dir.join(format!("{first:020}.seg"));
            let (offsets, good_bytes, file_bytes) = scan(&path).map_err(io)?;
            if good_bytes < file_bytes {
                if i == last {
                    recovery.torn_bytes = file_bytes - good_bytes;
                    let f = OpenOptions::new().write(true).open(&path).map_err(io)?;
                    f.set_len(good_bytes).map_err(io)?;
                    f.sync_all().map_err(io)?;
                } else {
                    recovery.damaged += 1;
                }
            }
            let end = first + offsets.len() as u64;
            if end <= acked && i != last {
                std::fs::remove_file(&path).map_err(io)?;
                continue;
            }
            segments.push(Segment {
                first,
                path,
                offsets,
                bytes: good_bytes,
            });
        }
        let next = segments
            .last()
            .map_or(acked, |s| s.first + s.offsets.len() as u64)
            .max(acked);
        let acked = acked.max(segments.first().map_or(acked, |s| s.first));
        recovery.pending = next - acked;
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: segment_bytes.max(64 * 1024),
            segments,
            writer: None,
            next,
            acked,
            dropped: 0,
        };
        Ok((spool, recovery))
    }

    fn io(&self, source: std::io::Error) -> SpoolError {
        SpoolError::Io {
            dir: self.dir.display().to_string(),
            source,
        }
    }

    /// Bytes of the events not yet delivered (what the size limit counts; the disk may hold up
    /// to one segment more, delivered records of the head segment, until that segment goes).
    pub fn bytes(&self) -> u64 {
        let total: u64 = self.segments.iter().map(|s| s.bytes).sum();
        let delivered = self.segments.first().map_or(0, |head| {
            let k = self.acked.saturating_sub(head.first) as usize;
            head.offsets.get(k).copied().unwrap_or(head.bytes)
        });
        total - delivered
    }

    /// Bytes that events (each with its record header, [`Spool::stored_len`]) may still take.
    pub fn room(&self) -> u64 {
        self.max_bytes.saturating_sub(self.bytes())
    }

    /// Bytes an event takes in the spool.
    pub fn stored_len(event: &[u8]) -> u64 {
        (HEADER + event.len()) as u64
    }

    /// Records waiting to be delivered.
    pub fn pending(&self) -> u64 {
        self.next - self.acked
    }

    /// Appends one event; returns its sequence number. Not durable until `sync`.
    pub fn append(&mut self, event: &[u8]) -> Result<u64, SpoolError> {
        let len = (HEADER + event.len()) as u64;
        if len > self.segment_bytes || u32::try_from(event.len()).is_err() {
            return Err(SpoolError::TooLarge {
                dir: self.dir.display().to_string(),
                len: event.len(),
            });
        }
        if self.bytes() + len > self.max_bytes {
            return Err(SpoolError::Full {
                dir: self.dir.display().to_string(),
                bytes: self.bytes(),
                max: self.max_bytes,
            });
        }
        let roll = self
            .segments
            .last()
            .is_none_or(|s| s.bytes + len > self.segment_bytes);
        if roll || self.writer.is_none() {
            self.sync()?;
            if roll {
                let path = self.dir.join(format!("{:020}.seg", self.next));
                self.segments.push(Segment {
                    first: self.next,
                    path,
                    offsets: Vec::new(),
                    bytes: 0,
                });
            }
            let path = self
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| self.io(e))?;
            self.writer = Some(BufWriter::with_capacity(256 * 1024, f));
        }
        let crc = crc32fast::hash(event);
        let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.last_mut()) else {
            return Err(self.io(std::io::Error::other("no open segment")));
        };
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&(event.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc.to_le_bytes());
        let r = w.write_all(&header).and_then(|()| w.write_all(event));
        if let Err(e) = r {
            return Err(self.io(e));
        }
        seg.offsets.push(seg.bytes);
        seg.bytes += len;
        self.next += 1;
        Ok(self.next - 1)
    }

    /// Makes every appended event durable (flush and fsync): after it returns, the events
    /// survive a crash, and the producer may acknowledge its own input.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if let Some(w) = self.writer.as_mut() {
            let r = w.flush().and_then(|()| w.get_ref().sync_data());
            if let Err(e) = r {
                return Err(self.io(e));
            }
        }
        Ok(())
    }

    /// Up to `n` events from the head, with their sequence numbers, without consuming them.
    pub fn peek(&mut self, n: usize) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        self.sync()?;
        let mut out = Vec::new();
        let mut seq = self.acked;
        for seg in &self.segments {
            if out.len() >= n {
                break;
            }
            let end = seg.first + seg.offsets.len() as u64;
            if seq >= end {
                continue;
            }
            let mut f = File::open(&seg.path).map_err(|e| self.io(e))?;
            let start = seg.offsets[(seq.max(seg.first) - seg.first) as usize];
            f.seek(SeekFrom::Start(start)).map_err(|e| self.io(e))?;
            let mut r = std::io::BufReader::new(f);
            while seq < end && out.len() < n {
                let mut header = [0u8; HEADER];
                r.read_exact(&mut header).map_err(|e| self.io(e))?;
                let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
                let mut event = vec![0u8; len];
                r.read_exact(&mut event).map_err(|e| self.io(e))?;
                out.push((seq.max(seg.first), event));
                seq = seq.max(seg.first) + 1;
            }
        }
        Ok(out)
    }

    /// Every event before `upto` was delivered: records it durably and deletes segments that
    /// hold nothing newer.
    pub fn ack(&mut self, upto: u64) -> Result<(), SpoolError> {
        let upto = upto.min(self.next);
        if upto <= self.acked {
            return Ok(());
        }
        let tmp = self.dir.join("ack.tmp");
        let r = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(upto.to_string().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join("ack"))
        })();
        r.map_err(|e| self.io(e))?;
        self.acked = upto;
        while self.segments.len() > 1
            && self.segments[0].first + self.segments[0].offsets.len() as u64 <= upto
        {
            let seg = self.segments.remove(0);
            std::fs::remove_file(&seg.path).map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    /// The drop-oldest policy of a full spool: gives up the `n` oldest events (counted).
    pub fn drop_oldest(&mut self, n: u64) -> Result<(), SpoolError> {
        let n = n.min(self.pending());
        self.dropped += n;
        self.ack(self.acked + n)
    }
}

/// Offsets of the whole records of a segment, the bytes they span, and the file's length.
/// Streamed, so recovery holds one record at a time, not the segment.
fn scan(path: &Path) -> std::io::Result<(Vec<u64>, u64, u64)> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = std::io::BufReader::with_capacity(256 * 1024, file);
    let mut offsets = Vec::new();
    let mut at = 0u64;
    let mut body = Vec::new();
    loop {
        let mut header = [0u8; HEADER];
        if r.read_exact(&mut header).is_err() {
            break;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        // A length past the end is a torn or damaged header: nothing after it is whole.
        if at + HEADER as u64 + len > file_len {
            break;
        }
        body.resize(len as usize, 0);
        if r.read_exact(&mut body).is_err() || crc32fast::hash(&body) != crc {
            break;
        }
        offsets.push(at);
        at += HEADER as u64 + len;
    }
    Ok((offsets, at, file_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dsm-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn event(i: u64) -> Vec<u8> {
        format!("event {i} {}", "x".repeat((i % 50) as usize)).into_bytes()
    }

    #[test]
    fn events_survive_reopen_and_drain_in_order() {
        let d = dir("order");
        let (mut s, r) = Spool::open(&d, 10 << 20, 64 * 1024).unwrap();
        assert_eq!(r, Recovery::default());
        for i in 0..5000 {
            assert_eq!(s.append(&event(i)).unwrap(), i);
        }
        s.sync().unwrap();
        assert!(s.segments.len() > 2, "rolled over segments");
        drop(s);
        let (mut s, r) = Spool::open(&d, 10 << 20, 64 * 1024).unwrap();
        assert_eq!(r.pending, 5000);
        let head = s.peek(10).unwrap();
        assert_eq!(head[3], (3, event(3)));
        s.ack(1200).unwrap();
        let segments_left = s.segments.len();
        drop(s);
        let (mut s, r) = Spool::open(&d, 10 << 20, 64 * 1024).unwrap();
        assert_eq!(r.pending, 3800);
        assert_eq!(
            s.segments.len(),
            segments_left,
            "delivered segments are gone"
        );
        let all = s.peek(10_000).unwrap();
        assert_eq!(all.len(), 3800);
        assert!(all
            .iter()
            .enumerate()
            .all(|(k, (seq, e))| *seq == 1200 + k as u64 && *e == event(*seq)));
        // Appending after reopen continues the numbering.
        assert_eq!(s.append(b"late").unwrap(), 5000);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_torn_append_is_cut_off_and_nothing_else_is_lost() {
        let d = dir("torn");
        let (mut s, _) = Spool::open(&d, 10 << 20, 1 << 20).unwrap();
        for i in 0..100 {
            s.append(&event(i)).unwrap();
        }
        s.sync().unwrap();
        let path = s.segments[0].path.clone();
        drop(s);
        // The process died halfway through writing one more record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, b'h', b'a']).unwrap();
        drop(f);
        let (mut s, r) = Spool::open(&d, 10 << 20, 1 << 20).unwrap();
        assert_eq!((r.pending, r.torn_bytes, r.damaged), (100, 10, 0));
        assert_eq!(s.append(b"next").unwrap(), 100);
        s.sync().unwrap();
        let all = s.peek(1000).unwrap();
        assert_eq!(all.len(), 101);
        assert_eq!(all[100].1, b"next");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_full_spool_says_so_and_drop_oldest_makes_room() {
        let d = dir("full");
        let (mut s, _) = Spool::open(&d, 2000, 64 * 1024).unwrap();
        let mut n = 0;
        let err = loop {
            match s.append(&[b'e'; 92]) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, SpoolError::Full { .. }), "{err}");
        assert_eq!(n, 20);
        // Dropping the oldest makes room at once, and is counted.
        s.drop_oldest(5).unwrap();
        assert_eq!((s.pending(), s.dropped), (15, 5));
        for _ in 0..5 {
            s.append(&[b'e'; 92]).unwrap();
        }
        assert!(matches!(
            s.append(&[b'e'; 92]),
            Err(SpoolError::Full { .. })
        ));
        let _ = std::fs::remove_dir_all(d);
    }
}
