//! Checkpoints: where a source resumes after a restart. One JSON file per
//! source, replaced atomically (write, fsync, rename), and saved only after
//! the broker acknowledged every event the checkpoint covers: a crash at any
//! point re-polls at most what was in flight, and a repeated row carries the
//! same event id.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A source's position upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checkpoint {
    /// The last watermark value taken (a timestamp or a date), if the source
    /// paginates by watermark.
    pub watermark: Option<String>,
    /// With keyset pagination, the id of the last row taken (at
    /// `watermark`): the next page starts after (`watermark`,
    /// `watermark_id`). Absent from older files, and left out of the file
    /// when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark_id: Option<String>,
    /// Rows taken at `watermark` (the watermark pagination of older
    /// versions), the next offset (offset pagination), or the next listing
    /// page (scraper).
    pub position: u64,
    /// Content hashes, for change detection: by URL, each article seen
    /// (scraper); by row (`date/country`), each row of the correction
    /// window, and each line dead-lettered, by its own hash (daily file).
    pub seen: BTreeMap<String, String>,
    /// The scraper's articles listed so far in the current cycle: at the
    /// end of a complete cycle, `seen` keeps only these. Left out of the
    /// file when empty.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub listed: BTreeSet<String>,
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system error.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file exists but is not a checkpoint.
    #[error(
        "checkpoint {path} is corrupt: {source}; move it away to start the source from scratch"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
}

/// The checkpoint files of a directory.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    /// A store in `dir`, created if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| CheckpointError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The file of `source`.
    pub fn path(&self, source: &str) -> PathBuf {
        self.dir.join(format!("{source}.json"))
    }

    /// The saved checkpoint of `source`, or the start if there is none.
    pub fn load(&self, source: &str) -> Result<Checkpoint, CheckpointError> {
        let path = self.path(source);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| CheckpointError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
            Err(source) => Err(CheckpointError::Io { path, source }),
        }
    }

    /// Replaces the checkpoint of `source`, durably.
    pub fn save(&self, source: &str, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let path = self.path(source);
        let io = |source| CheckpointError::Io {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(checkpoint).expect("a checkpoint serializes");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&self.dir).map_err(io)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_names_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().join("cp")).unwrap();
        assert_eq!(store.load("s").unwrap(), Checkpoint::default());
        let cp = Checkpoint {
            watermark: Some("2024-01-01T00:00:00.001".into()),
            watermark_id: Some("row-it's".into()),
            position: 3,
            seen: BTreeMap::from([("http://x/a".into(), "ab".into())]),
            listed: BTreeSet::from(["http://x/a".into()]),
        };
        store.save("s", &cp).unwrap();
        assert_eq!(store.load("s").unwrap(), cp);
        // Without an id, the file is what older versions wrote and read.
        let old = Checkpoint {
            watermark_id: None,
            listed: BTreeSet::new(),
            ..cp.clone()
        };
        store.save("s", &old).unwrap();
        let text = std::fs::read_to_string(store.path("s")).unwrap();
        assert!(
            !text.contains("watermark_id") && !text.contains("listed"),
            "{text}"
        );
        assert_eq!(store.load("s").unwrap(), old);
        // A file written before keyset pagination still loads.
        std::fs::write(
            store.path("s"),
            br#"{"watermark": "2024-01-01T00:00:00.001", "position": 3, "seen": {}}"#,
        )
        .unwrap();
        assert_eq!(
            store.load("s").unwrap(),
            Checkpoint {
                watermark: Some("2024-01-01T00:00:00.001".into()),
                position: 3,
                ..Checkpoint::default()
            }
        );
        std::fs::write(store.path("s"), b"{\"position\": \"x\"").unwrap();
        let err = store.load("s").unwrap_err().to_string();
        assert!(err.contains("s.json") && err.contains("corrupt"), "{err}");
    }
}
