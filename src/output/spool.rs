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
//! - `head`: the sequence number of the first record not yet delivered, in two 16-byte slots
//!   (`[number u64 LE][CRC-32 u32 LE]["dsm1"]`) written in turn, in place. Acknowledging so
//!   never needs a new file or a new block: it works on a full disk and in a directory that
//!   turned read-only, and a write torn by a crash spoils one slot, never both (the other holds
//!   the position before, so at most one batch is delivered twice). Spools of earlier versions
//!   kept the number as text in `ack`; it is read once and replaced.
//!
//! Appends wait in memory (at most [`WRITE_BUFFER`]) until `sync` writes and fsyncs them; only
//! then are they durable, and only durable records are read back for delivery. When a write or
//! sync fails (no space left, the directory turned unwritable), everything not yet durable is
//! rolled back (the tail segment cut to its durable length, a segment started since removed),
//! so the caller can refuse the events it had not yet confirmed, delivery of what is durable goes
//! on, and appending works again by itself once the disk takes writes.
//!
//! Recovery on open: records are read from the acknowledged position; a record cut short or
//! failing its CRC at the end of the last segment is a torn write (the process died while
//! appending, before that record was synced and acknowledged to its producer) and is cut off.
//! Anywhere else it is damage: the records after it in that segment are counted as lost and
//! reading goes on with the next segment.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER: usize = 8;
/// Appended bytes kept in memory before they are written out (they are still not durable until
/// `sync`).
const WRITE_BUFFER: usize = 256 * 1024;
const SLOT: usize = 16;
const SLOT_MAGIC: &[u8; 4] = b"dsm1";

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
    /// Byte offset of each of its records, in order.
    offsets: Vec<u64>,
    /// Bytes its records take, those still in the write buffer included.
    bytes: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }
}

/// The delivery position, written in place (see the module's comment).
struct HeadFile {
    file: File,
    /// Writes so far: which slot is next.
    writes: u64,
}

impl HeadFile {
    /// Opens `head` (made from the legacy `ack`, or 0, when missing) and reads the position.
    fn open(dir: &Path) -> std::io::Result<(HeadFile, u64)> {
        let path = dir.join("head");
        let existing = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(bytes) = existing {
            let newest = bytes
                .chunks(SLOT)
                .enumerate()
                .filter_map(|(i, s)| Some((read_slot(s)?, i)))
                .max();
            if let Some((position, i)) = newest {
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                // The next write goes to the other slot, so the newest stays until it is done.
                let writes = i as u64 + 1;
                return Ok((HeadFile { file, writes }, position));
            }
        }
        let legacy = dir.join("ack");
        let position = match std::fs::read_to_string(&legacy) {
            Ok(t) => t.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let tmp = dir.join("head.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&[slot(position), slot(position)].concat())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()?;
        if legacy.exists() {
            std::fs::remove_file(&legacy)?;
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        Ok((HeadFile { file, writes: 0 }, position))
    }

    fn write(&mut self, position: u64) -> std::io::Result<()> {
        let at = (self.writes % 2) * SLOT as u64;
        self.file.write_all_at(&slot(position), at)?;
        self.file.sync_data()?;
        self.writes += 1;
        Ok(())
    }
}

fn slot(position: u64) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    let number = position.to_le_bytes();
    s[..8].copy_from_slice(&number);
    s[8..12].copy_from_slice(&crc32fast::hash(&number).to_le_bytes());
    s[12..].copy_from_slice(SLOT_MAGIC);
    s
}

fn read_slot(s: &[u8]) -> Option<u64> {
    let s: &[u8; SLOT] = s.try_into().ok()?;
    let crc = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    (&s[12..] == SLOT_MAGIC && crc32fast::hash(&s[..8]) == crc)
        .then(|| u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// The last segment, open for appending.
    tail: Option<File>,
    /// Appended records not yet written to `tail`.
    buffer: Vec<u8>,
    /// Next sequence number to append.
    next: u64,
    /// First sequence number not yet durable: records before it are written and synced.
    durable: u64,
    /// First sequence number not yet acknowledged.
    acked: u64,
    head: HeadFile,
    /// A segment file was made since the directory was last synced: the next sync syncs the
    /// directory too, so the new file's name survives a power loss.
    new_file: bool,
    /// Delivered segments whose removal failed (an unwritable directory): tried again at each
    /// acknowledgement.
    doomed: Vec<PathBuf>,
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
        let (head, acked) = HeadFile::open(dir).map_err(io)?;
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
            if offsets.is_empty() && i != last {
                // Damaged from its first record: nothing in it can be read (counted above as
                // damage). Kept aside for a look, out of the way of the segments that follow.
                let mut aside = path.clone().into_os_string();
                aside.push(".damaged");
                std::fs::rename(&path, aside).map_err(io)?;
                continue;
            }
            if end <= acked && (i != last || end < acked) {
                // Delivered; or a last segment that damage cut short of the delivery position,
                // which would put the next records out of step with their numbers: the next
                // append starts a new segment at the position.
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
        let next = segments.last().map_or(acked, Segment::end).max(acked);
        let acked = acked.max(segments.first().map_or(acked, |s| s.first));
        recovery.pending = next - acked;
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: segment_bytes.max(64 * 1024),
            segments,
            tail: None,
            buffer: Vec::new(),
            next,
            durable: next,
            acked,
            head,
            new_file: false,
            doomed: Vec::new(),
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

    /// Whether an event of `len` bytes may be appended at all (a segment, and the spool when
    /// empty, must hold it).
    pub fn takes(&self, len: usize) -> bool {
        let stored = (HEADER + len) as u64;
        stored <= self.segment_bytes && stored <= self.max_bytes && u32::try_from(len).is_ok()
    }

    /// Bytes an event takes in the spool.
    pub fn stored_len(event: &[u8]) -> u64 {
        (HEADER + event.len()) as u64
    }

    /// Records waiting to be delivered (those appended but not yet synced included).
    pub fn pending(&self) -> u64 {
        self.next - self.acked
    }

    /// Durable records waiting to be delivered: what [`Spool::peek`] can read.
    pub fn deliverable(&self) -> u64 {
        self.durable.saturating_sub(self.acked)
    }

    /// Appends one event; returns its sequence number. Not durable until `sync`. On an I/O
    /// error everything not yet durable is rolled back.
    pub fn append(&mut self, event: &[u8]) -> Result<u64, SpoolError> {
        let len = (HEADER + event.len()) as u64;
        if !self.takes(event.len()) {
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
        if roll || self.tail.is_none() {
            if let Err(e) = self.open_tail(roll) {
                self.roll_back();
                return Err(self.io(e));
            }
        }
        let Some(seg) = self.segments.last_mut() else {
            return Err(self.io(std::io::Error::other("no open segment")));
        };
        self.buffer
            .extend_from_slice(&(event.len() as u32).to_le_bytes());
        self.buffer
            .extend_from_slice(&crc32fast::hash(event).to_le_bytes());
        self.buffer.extend_from_slice(event);
        seg.offsets.push(seg.bytes);
        seg.bytes += len;
        self.next += 1;
        if self.buffer.len() >= WRITE_BUFFER {
            if let Err(e) = self.write_out() {
                self.roll_back();
                return Err(self.io(e));
            }
        }
        Ok(self.next - 1)
    }

    /// Opens the tail segment for appending; `roll`: a new one, after writing out and syncing
    /// the current one (its records become durable with the next `sync`; until then a roll
    /// back cuts them off too).
    fn open_tail(&mut self, roll: bool) -> std::io::Result<()> {
        if roll {
            self.write_out()?;
            if let Some(f) = &self.tail {
                f.sync_data()?;
            }
            self.tail = None;
            let path = self.dir.join(format!("{:020}.seg", self.next));
            self.segments.push(Segment {
                first: self.next,
                path,
                offsets: Vec::new(),
                bytes: 0,
            });
        }
        let Some(seg) = self.segments.last() else {
            return Err(std::io::Error::other("no segment to append to"));
        };
        self.new_file |= !seg.path.exists();
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&seg.path)?;
        // Bytes past the records (a roll-back whose cut failed) are cut before anything is
        // appended after them.
        let len = f.metadata()?.len();
        if len > seg.bytes {
            f.set_len(seg.bytes)?;
        } else if len < seg.bytes {
            return Err(std::io::Error::other(format!(
                "{} is shorter ({len} bytes) than its records ({})",
                seg.path.display(),
                seg.bytes
            )));
        }
        self.tail = Some(f);
        Ok(())
    }

    fn write_out(&mut self) -> std::io::Result<()> {
        if let Some(f) = self.tail.as_mut() {
            f.write_all(&self.buffer)?;
        }
        self.buffer.clear();
        Ok(())
    }

    /// Makes every appended event durable (write and fsync): after it returns, the events
    /// survive a crash, and the producer may acknowledge its own input. On an error, everything
    /// not yet durable is rolled back: the producer must not acknowledge it.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.durable == self.next {
            return Ok(());
        }
        let r = self
            .write_out()
            .and_then(|()| self.tail.as_ref().map_or(Ok(()), File::sync_data))
            .and_then(|()| match self.new_file {
                true => File::open(&self.dir).and_then(|d| d.sync_all()),
                false => Ok(()),
            });
        match r {
            Ok(()) => {
                self.durable = self.next;
                self.new_file = false;
                Ok(())
            }
            Err(e) => {
                self.roll_back();
                Err(self.io(e))
            }
        }
    }

    /// Forgets every record after the durable ones: the buffer, the bytes written past the
    /// durable length of the tail segment, and segments started since. Cutting a file shorter
    /// needs no space, so this works on a full disk; should even that fail, the next append
    /// cuts the file first (`open_tail`), and a reopen cuts the bytes off as a torn tail.
    pub fn roll_back(&mut self) {
        self.buffer.clear();
        self.tail = None;
        while let Some(seg) = self.segments.last() {
            if seg.first < self.durable || (seg.first == self.durable && self.segments.len() == 1) {
                break;
            }
            let _ = std::fs::remove_file(&seg.path);
            self.segments.pop();
        }
        if let Some(seg) = self.segments.last_mut() {
            let keep = self.durable.saturating_sub(seg.first) as usize;
            if keep < seg.offsets.len() {
                seg.bytes = seg.offsets[keep];
                seg.offsets.truncate(keep);
                if let Ok(f) = OpenOptions::new().write(true).open(&seg.path) {
                    let _ = f.set_len(seg.bytes).and_then(|()| f.sync_all());
                }
            }
        }
        self.next = self.durable;
    }

    /// Up to `n` durable events from the head, with their sequence numbers, without consuming
    /// them; no more than `max_bytes` of events, but always one if there is one.
    pub fn peek(&self, n: usize, max_bytes: usize) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let mut out = Vec::new();
        let mut seq = self.acked;
        let mut taken = 0;
        for seg in &self.segments {
            if out.len() >= n || seq >= self.durable || taken >= max_bytes {
                break;
            }
            let end = seg.end().min(self.durable);
            if seq >= end {
                continue;
            }
            let mut f = File::open(&seg.path).map_err(|e| self.io(e))?;
            let start = seg.offsets[(seq.max(seg.first) - seg.first) as usize];
            f.seek(SeekFrom::Start(start)).map_err(|e| self.io(e))?;
            let mut r = std::io::BufReader::new(f);
            while seq < end && out.len() < n && taken < max_bytes {
                let mut header = [0u8; HEADER];
                r.read_exact(&mut header).map_err(|e| self.io(e))?;
                let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
                let mut event = vec![0u8; len];
                r.read_exact(&mut event).map_err(|e| self.io(e))?;
                taken += len;
                out.push((seq.max(seg.first), event));
                seq = seq.max(seg.first) + 1;
            }
        }
        Ok(out)
    }

    /// Every event before `upto` was delivered: records it durably (in place: no new space
    /// needed) and deletes segments that hold nothing newer (a removal that fails is tried
    /// again at the next acknowledgement). The position moves on even when it cannot be saved
    /// (a read-only or failing disk): the error says so, and the next acknowledgement saves it
    /// again; until then a restart would deliver those events once more, but the running spool
    /// never sends them twice.
    pub fn ack(&mut self, upto: u64) -> Result<(), SpoolError> {
        let upto = upto.min(self.durable);
        if upto <= self.acked {
            return Ok(());
        }
        let saved = self.head.write(upto);
        self.acked = upto;
        // The tail segment goes too once all of it is delivered (a small disk may hold just
        // the one): the next append starts a new one.
        let all_delivered = upto == self.next;
        while self.segments.first().is_some_and(|s| {
            s.end() <= upto && (self.segments.len() > 1 || (all_delivered && !s.offsets.is_empty()))
        }) {
            let seg = self.segments.remove(0);
            self.doomed.push(seg.path);
        }
        if self.segments.is_empty() {
            self.tail = None;
        }
        if saved.is_ok() {
            self.doomed.retain(|p| match std::fs::remove_file(p) {
                Ok(()) => false,
                Err(e) => e.kind() != std::io::ErrorKind::NotFound,
            });
        }
        saved.map_err(|e| self.io(e))
    }

    /// The drop-oldest policy of a full spool: gives up the `n` oldest durable events
    /// (counted).
    pub fn drop_oldest(&mut self, n: u64) -> Result<(), SpoolError> {
        let n = n.min(self.deliverable());
        let acked = self.ack(self.acked + n);
        self.dropped += n;
        acked
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
        let head = s.peek(10, usize::MAX).unwrap();
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
        let all = s.peek(10_000, usize::MAX).unwrap();
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
        let all = s.peek(1000, usize::MAX).unwrap();
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
        // Dropping the oldest (durable) events makes room at once, and is counted.
        s.drop_oldest(5).unwrap();
        assert_eq!((s.pending(), s.dropped), (20, 0), "nothing durable yet");
        s.sync().unwrap();
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

    #[test]
    fn a_roll_back_forgets_exactly_what_was_not_durable() {
        let d = dir("rollback");
        let (mut s, _) = Spool::open(&d, 10 << 20, 64 * 1024).unwrap();
        for i in 0..100 {
            s.append(&event(i)).unwrap();
        }
        s.sync().unwrap();
        // Not synced, across a segment roll and past the write buffer: a failed sync forgets
        // all of it, and the durable events stay readable.
        for i in 100..3000 {
            s.append(&event(i)).unwrap();
        }
        assert!(s.segments.len() > 1);
        assert_eq!((s.durable, s.deliverable()), (100, 100));
        let durable = s.durable;
        s.roll_back();
        assert_eq!((s.pending(), s.deliverable()), (durable, durable));
        let all = s.peek(10_000, usize::MAX).unwrap();
        assert_eq!(all.len() as u64, durable);
        // Appending goes on after the durable events, and a reopen sees the same.
        assert_eq!(s.append(b"after").unwrap(), durable);
        s.sync().unwrap();
        drop(s);
        let (s, r) = Spool::open(&d, 10 << 20, 64 * 1024).unwrap();
        assert_eq!((r.pending, r.torn_bytes), (durable + 1, 0));
        let all = s.peek(10_000, usize::MAX).unwrap();
        assert_eq!(all.last().unwrap().1, b"after");
        assert!(all
            .iter()
            .take(durable as usize)
            .all(|(seq, e)| *e == event(*seq)));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn the_position_survives_a_torn_slot_and_an_old_ack_file_is_taken_over() {
        let d = dir("head");
        std::fs::create_dir_all(&d).unwrap();
        // A spool of an earlier version: the position as text in `ack`.
        std::fs::write(d.join("ack"), "7").unwrap();
        let (mut s, _) = Spool::open(&d, 10 << 20, 64 * 1024).unwrap();
        assert_eq!(s.acked, 7);
        assert!(!d.join("ack").exists());
        for i in 0..20 {
            s.append(&event(i)).unwrap();
        }
        s.sync().unwrap();
        s.ack(10).unwrap();
        s.ack(12).unwrap();
        drop(s);
        // A crash tore the slot written last (12): the other one (10) holds.
        let mut bytes = std::fs::read(d.join("head")).unwrap();
        assert_eq!(bytes.len(), 2 * SLOT);
        bytes[SLOT + 3] ^= 0xff;
        std::fs::write(d.join("head"), &bytes).unwrap();
        let (s, r) = Spool::open(&d, 10 << 20, 64 * 1024).unwrap();
        assert_eq!((s.acked, r.pending), (10, 17));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn damage_at_a_segment_start_or_before_the_position_does_not_stop_the_spool() {
        let d = dir("damage");
        let (mut s, _) = Spool::open(&d, 10 << 20, 64 * 1024).unwrap();
        for i in 0..6000 {
            s.append(&event(i)).unwrap();
        }
        s.sync().unwrap();
        assert!(s.segments.len() >= 3);
        let middle = s.segments[1].path.clone();
        let lost = s.segments[1].offsets.len() as u64;
        drop(s);
        // A middle segment damaged from its first record: set aside, the rest delivered, and
        // acknowledging everything empties the spool.
        let mut bytes = std::fs::read(&middle).unwrap();
        bytes[5] ^= 0xff;
        std::fs::write(&middle, bytes).unwrap();
        let (mut s, r) = Spool::open(&d, 10 << 20, 64 * 1024).unwrap();
        // (Pending counts sequence numbers: the lost ones are skipped when read.)
        assert_eq!((r.pending, r.damaged), (6000, 1));
        assert!(!middle.exists());
        let all = s.peek(10_000, usize::MAX).unwrap();
        assert_eq!(all.len() as u64, 6000 - lost);
        let (first_of_last, last) = {
            let l = s.segments.last().unwrap();
            (l.first, l.path.clone())
        };
        s.ack(first_of_last + 5).unwrap();
        assert_eq!(s.segments.len(), 1);
        drop(s);
        // The last segment cut short of the delivery position: new events are numbered from
        // the position and read back.
        let f = OpenOptions::new().write(true).open(&last).unwrap();
        f.set_len(HEADER as u64 + 2).unwrap();
        drop(f);
        let (mut s, r) = Spool::open(&d, 10 << 20, 64 * 1024).unwrap();
        assert_eq!(r.pending, 0);
        assert_eq!(s.append(b"after").unwrap(), first_of_last + 5);
        s.sync().unwrap();
        let all = s.peek(10, usize::MAX).unwrap();
        assert_eq!(all, vec![(first_of_last + 5, b"after".to_vec())]);
        s.ack(first_of_last + 6).unwrap();
        assert_eq!((s.pending(), s.segments.len()), (0, 0));
        let _ = std::fs::remove_dir_all(d);
    }
}
