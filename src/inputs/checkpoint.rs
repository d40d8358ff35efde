//! A poller's position, one JSON file per tenant and feed under `<data dir>/cursors/`, replaced
//! atomically (write, fsync, rename) and only after the outputs took the page it describes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Checkpoint {
    /// Items changed at or after this time (less the overlap) are still to be fetched.
    pub watermark: Option<String>,
    /// The page to fetch next when a sweep was cut short (a restart while paging).
    pub next_link: Option<String>,
    /// The latest change time the current sweep has taken so far.
    pub sweep_max: Option<String>,
    /// Keys (id and change time) taken within the overlap window: not sent again.
    pub seen: Vec<String>,
    /// When the last full sync (vulnerabilities) completed.
    pub last_full_sync: Option<String>,
}

pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    pub fn new(dir: &Path, tenant: &str, feed: &str) -> CheckpointFile {
        CheckpointFile {
            path: dir.join(format!("{tenant}.{feed}.json")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved position; none yet is the default. A damaged file is an error, not a silent
    /// restart from scratch.
    pub fn load(&self) -> Result<Checkpoint, String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", self.path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    pub fn save(&self, cp: &Checkpoint) -> Result<(), String> {
        use std::io::Write;
        let err = |e: std::io::Error| format!("{}: {e}", self.path.display());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(cp).map_err(|e| e.to_string())?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&text).map_err(err)?;
        f.sync_data().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_a_missing_file_is_the_start() {
        let dir = std::env::temp_dir().join(format!("dsm-cp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let f = CheckpointFile::new(&dir, "contoso", "graph-alerts");
        assert_eq!(f.load(), Ok(Checkpoint::default()));
        let cp = Checkpoint {
            watermark: Some("2026-11-01T00:00:00Z".into()),
            seen: vec!["a|1".into()],
            ..Checkpoint::default()
        };
        f.save(&cp).expect("save");
        assert_eq!(f.load(), Ok(cp));
        std::fs::write(f.path(), "{").expect("damage");
        assert!(f.load().is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
