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

/// Takes all but a little of the free space of the file system at `dir`.
fn fill_up(dir: &Path) {
    let o = Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output().unwrap();
    let avail: u64 = String::from_utf8_lossy(&o.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap();
    let f = std::fs::File::create(dir.join("filler")).unwrap();
    f.set_len(avail.saturating_sub(64 * 1024)).unwrap();
    // tmpfs allocates on write, not on set_len: write it out.
    let o = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "conv=notrunc"])
        .arg(format!("of={}", dir.join("filler").display()))
        .arg(format!("count={}", avail.saturating_sub(64 * 1024) / 65536))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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
    // Big records (16 long tags, the most a key may carry) fill the flash in a few hundred writes.
    let tags: Vec<String> = (0..16).map(|i| format!("tag:filler-{i:02}-{}", "x".repeat(110))).collect();
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

    // Space comes back while the server runs: writes work again without a
    // restart (sled keeps a failed flush's error; the store is reopened).
    flash.resize("4m");
    for i in 0..20 {
        let o = run(d, &["preauthkeys", "create", "--user", "alice", "-o", "json"]);
        assert!(o.status.success(), "write {i} after space was freed failed:\n{}", stderr(&o));
        acknowledged += 1;
    }
    ok(d, &["users", "create", "bob"]);
    assert_eq!(json(d, &["preauthkeys", "list", "-o", "json"]).as_array().unwrap().len(), acknowledged);
    // And a flash that fills again (something else takes the room) refuses cleanly.
    fill_up(&d.join("flash"));
    let mut refused = false;
    for _ in 0..3000 {
        let o = run(d, &["preauthkeys", "create", "--user", "alice", "--tags", &tags, "-o", "json"]);
        if o.status.success() {
            acknowledged += 1;
        } else {
            assert!(stderr(&o).contains("flash is full"), "{}", stderr(&o));
            refused = true;
            break;
        }
    }
    assert!(refused, "the flash never filled again");
    assert_eq!(http_get(&s.host_port(), "/health").0, 200);

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
    let users = json(d, &["users", "list", "-o", "json"]);
    assert_eq!(users.as_array().unwrap().len(), 2, "{users}");
}
