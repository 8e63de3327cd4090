//! A full flash: writes are refused cleanly, the server stays up, and every
//! acknowledged change is still there after kill -9 once there is room again.
//!
//! Mounts a small tmpfs as the "flash", so it needs root (as in CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "this test mounts a tmpfs and must run as root: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Mount(at.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let o = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_flash_refuses_writes_cleanly_and_loses_nothing_acknowledged() {
    require_tool("mount");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let flash = Mount::tmpfs(&d.join("flash"), "2300k");
    std::fs::write(
        d.join("config.yaml"),
        "listen_addr: 127.0.0.1:0\nunix_socket: ./ts.sock\nnoise:\n  private_key_path: ./noise.key\ndatabase:\n  sled:\n    path: ./flash/db\n",
    )
    .unwrap();
    let s = Server::start(d, &[], &[]);
    ok(d, &["users", "create", "alice"]);
    // Big records (many tags) fill the flash in a few hundred writes.
    let tags: Vec<String> = (0..60).map(|i| format!("tag:filler-for-the-flash-{i:04}")).collect();
    let tags = tags.join(",");
    let mut acknowledged = 0;
    let mut refusal = String::new();
    for _ in 0..3000 {
        let o = run(d, &["preauthkeys", "create", "--user", "alice", "--tags", &tags, "-o", "json"]);
        if o.status.success() {
            acknowledged += 1;
        } else {
            refusal = stderr(&o);
            break;
        }
    }
    assert!(acknowledged > 0 && !refusal.is_empty(), "the flash never filled ({acknowledged} writes)");
    assert!(refusal.contains("flash is full"), "{refusal}");
    // The server is still up and still answers reads.
    assert_eq!(http_get(&s.host_port(), "/health").0, 200);
    assert_eq!(json(d, &["preauthkeys", "list", "-o", "json"]).as_array().unwrap().len(), acknowledged);

    s.kill9();
    // On a full flash sled cannot even open: a clear error, not a panic.
    let o = run(d, &["serve"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("free some space"), "{}", stderr(&o));
    // With room again, every acknowledged key is there.
    flash.resize("8m");
    let _s = Server::start(d, &[], &[]);
    let keys = json(d, &["preauthkeys", "list", "-o", "json"]);
    assert_eq!(keys.as_array().unwrap().len(), acknowledged);
}
