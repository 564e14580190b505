//! Checkpoint files: long-lived state (open windows, baselines, commands in force, open
//! incidents, watermarks) saved with the input positions it covers, and read back at start.
//!
//! # Format (version [`FORMAT_VERSION`])
//!
//! ```text
//! offset  size  field
//!      0     8  magic "GWCHKPT\0"
//!      8     4  format version, u32 little-endian
//!     12     8  payload length, u64 little-endian
//!     20     4  CRC-32 (IEEE) of the payload, u32 little-endian
//!     24     n  payload: MessagePack (rmp-serde), the state's serde form; histograms inside
//!               are hdrhistogram's V2 format
//! ```
//!
//! A file is written whole to `checkpoint.tmp`, synced, renamed over `checkpoint` and the
//! directory synced: a crash leaves the old checkpoint or the new one, never half of one. A
//! file of another format version, a bad magic, a short file or a CRC mismatch is refused
//! with a message that says which, never misread. The directory is locked while a process
//! uses it (`lock`), so two instances can't share one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version of the checkpoint format this graywatch writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"GWCHKPT\0";
const HEADER: usize = 24;
const FILE: &str = "checkpoint";
const TEMP: &str = "checkpoint.tmp";
const LOCK: &str = "lock";

/// Why a checkpoint could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The directory or a file in it could not be used (external; retrying may help).
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the directory.
    #[error(
        "checkpoint directory {0} is in use by another graywatch process: give each instance its own [checkpoint] dir"
    )]
    Locked(PathBuf),
    /// The file is not a checkpoint this graywatch can read (the operator's call: move it
    /// away to start without it, or run the graywatch that wrote it).
    #[error("checkpoint {path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What a save cost.
#[derive(Debug, Clone, Copy)]
pub struct Saved {
    /// Bytes written.
    pub bytes: u64,
    /// Time to encode and write it (fsyncs included).
    pub took: Duration,
}

/// A checkpoint directory, locked for this process.
#[derive(Debug)]
pub struct CheckpointDir {
    dir: PathBuf,
    _lock: File,
}

impl CheckpointDir {
    /// Opens (creating it if needed) and locks `dir`.
    ///
    /// # Errors
    /// [`CheckpointError::Io`] when it can't be created or locked; [`CheckpointError::Locked`]
    /// when another process holds it.
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CheckpointError::Locked(dir.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        Ok(CheckpointDir {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Reads the checkpoint, if there is one.
    ///
    /// # Errors
    /// [`CheckpointError::Unreadable`] for a file of another format version, a damaged or
    /// truncated file, or a payload that does not decode as `T`; [`CheckpointError::Io`].
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, CheckpointError> {
        let path = self.dir.join(FILE);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f
                .read_to_end(&mut bytes)
                .map_err(|source| CheckpointError::Io {
                    path: path.clone(),
                    source,
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Io { path, source }),
        };
        decode(&bytes)
            .map(Some)
            .map_err(|reason| CheckpointError::Unreadable { path, reason })
    }

    /// Writes `state` as the checkpoint, atomically (see the [module docs](self)).
    ///
    /// # Errors
    /// [`CheckpointError::Io`] (the previous checkpoint is left as it was).
    pub fn save<T: Serialize>(&self, state: &T) -> Result<Saved, CheckpointError> {
        let started = Instant::now();
        let bytes = encode(state);
        let temp = self.dir.join(TEMP);
        let path = self.dir.join(FILE);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { path, source }
        };
        let mut f = File::create(&temp).map_err(io(&temp))?;
        f.write_all(&bytes).map_err(io(&temp))?;
        f.sync_all().map_err(io(&temp))?;
        drop(f);
        std::fs::rename(&temp, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(Saved {
            bytes: bytes.len() as u64,
            took: started.elapsed(),
        })
    }
}

/// The checkpoint file's bytes for `state`.
pub fn encode<T: Serialize>(state: &T) -> Vec<u8> {
    // fields by name, not position: schemas' documents skip their absent optional fields,
    // and by position the next field would take the skipped one's place (a restored
    // quarantine read its version as a source zone); states written by position still decode
    let payload = rmp_serde::to_vec_named(state)
        .expect("checkpoint state is plain data (no maps with non-string keys, no I/O)");
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads a checkpoint file's bytes back.
///
/// # Errors
/// What is wrong with them, in words.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err("not a graywatch checkpoint (no GWCHKPT header)".into());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, but this graywatch reads version {FORMAT_VERSION}: \
             start without it (move it away) or run the graywatch that wrote it"
        ));
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(format!(
            "truncated or padded: the header says {len} bytes of state, the file has {}",
            payload.len()
        ));
    }
    if crc32fast::hash(payload) != crc {
        return Err("damaged: CRC-32 mismatch".into());
    }
    rmp_serde::from_slice(payload).map_err(|e| format!("state does not decode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct State {
        offsets: Vec<(String, i64)>,
        blob: Vec<u8>,
    }

    fn state() -> State {
        State {
            offsets: vec![("access-logs/0".into(), 42)],
            blob: vec![1, 2, 3],
        }
    }

    #[test]
    fn saves_atomically_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let cp = CheckpointDir::open(dir.path()).unwrap();
        assert_eq!(cp.load::<State>().unwrap(), None);
        let saved = cp.save(&state()).unwrap();
        assert_eq!(
            saved.bytes,
            std::fs::metadata(dir.path().join(FILE)).unwrap().len()
        );
        assert!(!dir.path().join(TEMP).exists());
        assert_eq!(cp.load::<State>().unwrap(), Some(state()));
    }

    #[test]
    fn another_version_or_damage_is_refused_by_name() {
        let mut bytes = encode(&state());
        bytes[8] = 2;
        assert_eq!(
            decode::<State>(&bytes).unwrap_err(),
            "format version 2, but this graywatch reads version 1: start without it (move it \
             away) or run the graywatch that wrote it"
        );
        let mut bytes = encode(&state());
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert_eq!(
            decode::<State>(&bytes).unwrap_err(),
            "damaged: CRC-32 mismatch"
        );
        let bytes = encode(&state());
        let err = decode::<State>(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.starts_with("truncated or padded"), "{err}");
        assert!(decode::<State>(b"{\"json\": true}").is_err());
    }

    #[test]
    fn a_directory_serves_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let _first = CheckpointDir::open(dir.path()).unwrap();
        let err = CheckpointDir::open(dir.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::Locked(_)), "{err}");
    }
}
