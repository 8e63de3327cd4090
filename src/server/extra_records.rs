//! `dns.extra_records_path`: the records file is read at start (one that
//! is missing or does not check stops the start, as in Headscale) and then
//! watched. A changed file that checks goes to every client as a delta; a
//! broken, emptied or removed one is logged and the last good records stay.
//!
//! Watching is a `stat` every [`POLL`]: no inotify crate, and nothing is
//! read from flash unless the file's size, times or inode moved.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::dns::records::{self, MAX_FILE_BYTES};
use crate::state::State;
use crate::tailcfg::DnsRecord;

pub const POLL: Duration = Duration::from_secs(2);

/// What tells one version of the file from another without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            ino: m.ino(),
            len: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }

    /// Whether a write within the same clock tick could still change the
    /// file without changing its stamp (flash file systems keep whole
    /// seconds): such a file is read again at the next poll.
    fn racy(&self) -> bool {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        now - self.mtime_ns.max(self.ctime_ns) < 2_000_000_000
    }
}

/// Reads and checks the file; `Ok(None)` for an empty one.
fn read(path: &Path) -> (Option<Stamp>, Result<Option<Vec<DnsRecord>>, String>) {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: opening a FIFO for reading would otherwise wait for a
    // writer forever (review 13). Only a regular file is read.
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path) {
        Ok(f) => f,
        Err(e) => return (None, Err(e.to_string())),
    };
    let stamp = match file.metadata() {
        Ok(m) if !m.is_file() => return (None, Err("is not a regular file".into())),
        Ok(m) => Stamp::of(&m),
        Err(e) => return (None, Err(e.to_string())),
    };
    let mut bytes = Vec::new();
    // One byte past the cap, so an oversized file is told from a full one.
    if let Err(e) = file.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes) {
        return (Some(stamp), Err(e.to_string()));
    }
    (Some(stamp), records::parse_file(&bytes).map_err(|e| e.to_string()))
}

fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp::of(&m))
}

/// The records at start, and what the watcher starts from.
#[derive(Debug)]
pub struct Loaded {
    pub records: Vec<DnsRecord>,
    stamp: Option<Stamp>,
}

/// Reads the file before the server starts: an error names the path.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let at = |e: String| format!("dns.extra_records_path: {}: {e}", path.display());
    match read(path) {
        (stamp, Ok(records)) => Ok(Loaded { records: records.unwrap_or_default(), stamp }),
        (_, Err(e)) => Err(at(e)),
    }
}

/// Polls the file until shutdown and hands changed records to `state`.
pub async fn watch(state: Arc<State>, path: PathBuf, loaded: Loaded, mut shutdown: watch::Receiver<bool>) {
    let mut seen = loaded.stamp.filter(|s| !s.racy());
    // The last problem logged, so a file that stays broken is logged once.
    let mut complained: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
        let p = path.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || stamp(&p)).await else { return };
        if now.is_some() && now == seen {
            continue;
        }
        let p = path.clone();
        let Ok((stamp, got)) = tokio::task::spawn_blocking(move || read(&p)).await else { return };
        seen = stamp.filter(|s| !s.racy());
        let problem = match got {
            Ok(Some(records)) => {
                let n = records.len();
                if state.set_extra_records(records) {
                    log::info!("dns: {n} extra records from {} sent to every client", path.display());
                }
                complained = None;
                continue;
            }
            Ok(None) => "is empty (write [] for no records)".to_string(),
            Err(e) => e,
        };
        if complained.as_deref() != Some(problem.as_str()) {
            log::warn!("dns.extra_records_path: {}: {problem}; keeping the last good records", path.display());
            complained = Some(problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_needs_a_file_that_checks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("records.json");
        assert!(load(&p).unwrap_err().contains("records.json"));
        std::fs::write(&p, r#"[{"name": "nas.lan", "type": "A", "value": "nas"}]"#).unwrap();
        assert!(load(&p).unwrap_err().contains("not an IP address"));
        std::fs::write(&p, "").unwrap();
        assert!(load(&p).unwrap().records.is_empty());
        std::fs::write(&p, r#"[{"name": "nas.lan", "type": "A", "value": "192.168.1.5"}]"#).unwrap();
        assert_eq!(load(&p).unwrap().records.len(), 1);
        assert!(load(dir.path()).unwrap_err().contains("not a regular file"));
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(made.success());
        assert!(load(&fifo).unwrap_err().contains("not a regular file"), "a FIFO must not block the start");
        std::fs::write(&p, vec![b' '; MAX_FILE_BYTES + 10]).unwrap();
        assert!(load(&p).unwrap_err().contains("the most that is read"));
    }
}
