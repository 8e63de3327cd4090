//! The server's Noise key on disk, in Headscale's format (`privkey:<hex>`), so
//! a key brought over from Headscale keeps every client's trust.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::secrets::random_bytes;
use crate::tailcfg::MachinePrivate;

#[derive(Debug)]
pub struct KeyFileError {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key file {}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for KeyFileError {}

/// Reads the key at `path`, or creates one there (mode 0600) if none exists.
pub fn load_or_create(path: &Path) -> Result<MachinePrivate, KeyFileError> {
    let err = |reason: String| KeyFileError { path: path.to_path_buf(), reason };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = MachinePrivate::parse(&text)
                .map_err(|e| err(format!("not a private key ({e}); expected privkey:<64 hex digits>")))?;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    log::warn!("{} can be read by other users; chmod 600 it", path.display());
                }
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            random_bytes(&mut bytes).map_err(|e| err(e.to_string()))?;
            let key = MachinePrivate::from_random(bytes);
            write_new(path, &key.to_text()).map_err(|e| err(format!("cannot create: {e}")))?;
            log::info!("created a new key at {}", path.display());
            Ok(key)
        }
        Err(e) => Err(err(format!("cannot read: {e}"))),
    }
}

/// Writes a new file with mode 0600, durably: the key must exist after a crash
/// if any client was ever told the matching public key.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/noise_private.key");
        let k1 = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("privkey:") && text.len() == 72, "{text}");
        assert_eq!(load_or_create(&path).unwrap(), k1);
    }

    #[test]
    fn a_headscale_key_is_used_as_is_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("noise_private.key");
        let hs = format!("privkey:{}", "2a".repeat(32));
        std::fs::write(&path, &hs).unwrap();
        assert_eq!(load_or_create(&path).unwrap().to_text(), hs);
        std::fs::write(&path, "hello").unwrap();
        let e = load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("not a private key"), "{e}");
    }
}
