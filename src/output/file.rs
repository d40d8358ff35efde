//! `FileOutput`: events as lines (LEEF or ECS NDJSON) in a file that rotates by size:
//! `out.log` is renamed `out.log.1` (and `.1` to `.2` ...) when the next line would take it past
//! the limit, keeping a set number of old files. A line is never split across two files, and
//! never torn: when a write or sync fails (no space left), the file is cut back to its length at
//! the last sync, so the lines of a batch that was not confirmed are gone whole and the next
//! line starts on a line of its own.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::OutputError;

#[derive(Debug, Clone)]
pub struct FileTarget {
    pub path: PathBuf,
    /// Rotate before a line would make the file larger than this (0: never rotate).
    pub max_bytes: u64,
    /// Rotated files kept beside the current one (`.1` newest).
    pub keep: u32,
}

pub struct FileOutput {
    target: FileTarget,
    file: BufWriter<File>,
    size: u64,
    /// The file's length at the last successful sync (or open): what a failure cuts back to.
    synced: u64,
    /// Lines written since the output was opened.
    pub written: u64,
    pub rotations: u64,
}

impl FileOutput {
    /// Opens (appending to) the current file.
    pub fn open(target: FileTarget) -> Result<FileOutput, OutputError> {
        let (file, size) = open_append(&target.path)?;
        Ok(FileOutput {
            target,
            file: BufWriter::with_capacity(256 * 1024, file),
            size,
            synced: size,
            written: 0,
            rotations: 0,
        })
    }

    /// Writes one event and its line feed, rotating first if the line would not fit.
    pub fn write_line(&mut self, line: &[u8]) -> Result<(), OutputError> {
        let len = line.len() as u64 + 1;
        if self.target.max_bytes > 0 && self.size > 0 && self.size + len > self.target.max_bytes {
            self.rotate()?;
        }
        let written = self
            .file
            .write_all(line)
            .and_then(|()| self.file.write_all(b"\n"));
        if let Err(e) = written {
            return Err(self.cut_back(e));
        }
        self.size += len;
        self.written += 1;
        Ok(())
    }

    /// Flushes buffered lines to the file and the file to disk.
    pub fn sync(&mut self) -> Result<(), OutputError> {
        let r = self
            .file
            .flush()
            .and_then(|()| self.file.get_ref().sync_data());
        match r {
            Ok(()) => {
                self.synced = self.size;
                Ok(())
            }
            Err(e) => Err(self.cut_back(e)),
        }
    }

    /// After a failed write or sync: drops what is buffered and cuts the file back to its
    /// length at the last sync (cutting needs no space), so no torn line stays behind.
    fn cut_back(&mut self, cause: std::io::Error) -> OutputError {
        let target = self.target.path.display().to_string();
        let reopened = open_append(&self.target.path).map(|(file, _)| file);
        let cut = reopened.and_then(|file| {
            file.set_len(self.synced)
                .and_then(|()| file.sync_all())
                .map_err(|source| OutputError::Io {
                    target: target.clone(),
                    source,
                })?;
            Ok(file)
        });
        match cut {
            Ok(file) => {
                // The old writer's buffer is dropped unwritten: it holds the lines cut off.
                let old =
                    std::mem::replace(&mut self.file, BufWriter::with_capacity(256 * 1024, file));
                drop(old.into_parts());
                self.size = self.synced;
            }
            Err(e) => {
                tracing::error!(file = %target, error = %e, "a failed write could not be cut back; a torn line may remain")
            }
        }
        OutputError::Io {
            target,
            source: cause,
        }
    }

    fn rotate(&mut self) -> Result<(), OutputError> {
        self.sync()?;
        let path = &self.target.path;
        let io = |source| OutputError::Io {
            target: path.display().to_string(),
            source,
        };
        let numbered = |n: u32| {
            let mut p = path.as_os_str().to_owned();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.target.keep == 0 {
            std::fs::remove_file(path).map_err(io)?;
        } else {
            let oldest = numbered(self.target.keep);
            if oldest.exists() {
                std::fs::remove_file(&oldest).map_err(io)?;
            }
            for n in (1..self.target.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1)).map_err(io)?;
                }
            }
            std::fs::rename(path, numbered(1)).map_err(io)?;
        }
        let (file, size) = open_append(path)?;
        self.file = BufWriter::with_capacity(256 * 1024, file);
        self.size = size;
        self.synced = size;
        self.rotations += 1;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<(File, u64), OutputError> {
    let io = |source| OutputError::Io {
        target: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    Ok((file, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_keeping_whole_lines_in_order() {
        let dir = std::env::temp_dir().join(format!("dsm-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.log");
        let mut out = FileOutput::open(FileTarget {
            path: path.clone(),
            max_bytes: 100,
            keep: 2,
        })
        .unwrap();
        let lines: Vec<String> = (0..30)
            .map(|i| format!("event {i:02} {}", "x".repeat(i % 7)))
            .collect();
        for l in &lines {
            out.write_line(l.as_bytes()).unwrap();
        }
        out.sync().unwrap();
        assert!(out.rotations >= 3);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let (older, newer, current) = (
            read(&dir.join("out.log.2")),
            read(&dir.join("out.log.1")),
            read(&path),
        );
        for text in [&older, &newer, &current] {
            assert!(text.len() <= 100 && text.ends_with('\n'), "{text:?}");
        }
        // The kept files hold the newest lines, whole and in order.
        let kept: Vec<&str> = [older.as_str(), newer.as_str(), current.as_str()]
            .iter()
            .flat_map(|t| t.lines())
            .collect();
        let tail: Vec<&str> = lines[lines.len() - kept.len()..]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(kept, tail);
        assert!(!dir.join("out.log.3").exists());
        // Reopening appends.
        drop(out);
        let mut again = FileOutput::open(FileTarget {
            path: path.clone(),
            max_bytes: 0,
            keep: 2,
        })
        .unwrap();
        again.write_line(b"after reopen").unwrap();
        again.sync().unwrap();
        assert!(read(&path).ends_with(&format!("{}\nafter reopen\n", lines[29])));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
