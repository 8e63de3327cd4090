//! What the attack tests (tests/limits.rs, login_limits.rs, relay_limits.rs)
//! share: source addresses on loopback, the server's memory, a server with a
//! config of its own, and clients that hold what they are given.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use super::client::{self, Client};
use super::*;

/// 127.0.0.n: on loopback every one is a source address of its own.
pub fn local(a: u8, b: u8) -> IpAddr {
    IpAddr::from([127, 0, a, b])
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB")
}

pub fn start(config: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let s = Server::start(dir.path(), &[], &[]);
    (dir, s)
}

pub fn reusable_key(d: &std::path::Path, user: &str) -> String {
    ok(d, &["users", "create", user]);
    json(d, &["preauthkeys", "create", "--user", user, "--reusable", "-o", "json"])["key"].as_str().unwrap().to_string()
}

/// `/health` on a fresh connection from `from`, retried until it answers
/// 200 or `within` passes; how long that took.
pub async fn health_within(addr: &str, from: IpAddr, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        let req = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        if client::http1_from(addr, Some(from), req).await.0 == 200 {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Starts POSTs on `c` that send `len` bytes of body and never finish.
pub fn unfinished(c: &Client, streams: usize, len: usize, tasks: &mut Vec<tokio::task::JoinHandle<u16>>) {
    for k in 0..streams {
        let path = if k % 2 == 0 { "/machine/register" } else { "/machine/map" };
        let (tx, task) = c.post_streaming(path, None);
        tasks.push(task);
        tokio::spawn(async move {
            let mut left = len;
            while left > 0 {
                let n = left.min(16 * 1024);
                if tx.send(Bytes::from(vec![b'{'; n])).await.is_err() {
                    return;
                }
                left -= n;
            }
            // Never the end of the body.
            std::future::pending::<()>().await;
        });
    }
}

pub fn tally(tasks: &[tokio::task::JoinHandle<u16>]) -> String {
    let done = tasks.iter().filter(|t| t.is_finished()).count();
    format!("{} streams: {done} refused or answered, {} still held open", tasks.len(), tasks.len() - done)
}

/// `n` machines with a node of `user`: their machine keys.
pub async fn devices(
    d: &std::path::Path,
    addr: &str,
    server: tinyscale::tailcfg::MachinePublic,
    n: usize,
) -> Vec<[u8; 32]> {
    let key = reusable_key(d, "family");
    let mut machines = Vec::new();
    for i in 0..n {
        let machine = client::random32();
        let mut c = Client::connect(addr, server, machine).await.unwrap();
        c.register_with_key(&client::random32(), &key, &format!("dev{i}")).await;
        machines.push(machine);
    }
    machines
}

/// A device asking to join without a key, from `from`: its client and login URL.
pub async fn keyless_device(addr: &str, server: tinyscale::tailcfg::MachinePublic, from: IpAddr) -> (Client, Value) {
    let mut c = Client::connect_from(addr, server, client::random32(), from).await.unwrap();
    let node = client::random32();
    let req = json!({"Version": client::VERSION, "NodeKey": client::node_key_text(&node), "Hostinfo": {"Hostname": "laptop"}});
    let (status, r) = c.register(&req).await;
    assert_eq!(status, 200, "{r}");
    let mut follow = req;
    follow["Followup"] = r["AuthURL"].clone();
    (c, follow)
}

/// A Noise connection from `from` (127.0.0.1 when `None`) whose HTTP/2
/// client grants the server no window: it takes no answer's body. Also the
/// task that ends with the connection. Err: the status of a refused upgrade.
pub async fn shut_window(
    addr: &str,
    server: tinyscale::tailcfg::MachinePublic,
    machine: [u8; 32],
    from: Option<IpAddr>,
) -> Result<(hyper::client::conn::http2::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>), u16> {
    let (init, initiator) =
        tinyscale::noise::Initiator::start(client::VERSION, &machine, &client::random32(), &server.0).unwrap();
    let sock = client::tcp_from(addr, from).await.map_err(|_| 0u16)?;
    let (mut sock, status, _) = client::upgrade_on(sock, addr, &init).await;
    if status != 101 {
        return Err(status);
    }
    let mut first = [0u8; 3];
    sock.read_exact(&mut first).await.map_err(|_| 0u16)?;
    let mut rest = vec![0u8; u16::from_be_bytes([first[1], first[2]]) as usize];
    sock.read_exact(&mut rest).await.map_err(|_| 0u16)?;
    let msg: Vec<u8> = first.iter().copied().chain(rest).collect();
    let session = initiator.finish(&msg).unwrap();
    let io = tinyscale::control::NoiseIo::new(sock, session.rx, session.tx, Vec::new());
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|_| 0u16)?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((send, task))
}

pub fn post_json(path: &str, body: &Value) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(format!("https://tinyscale{path}")).body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// A connection from `from` that pipelines `GET /health` and never reads
/// the answers (its receive buffer is tiny): hyper is left writing. Returns
/// its read half; the writing goes on in a task until the server closes.
pub async fn stalled_pipeline(addr: &str, from: IpAddr) -> Option<tokio::net::tcp::OwnedReadHalf> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.set_recv_buffer_size(2048).ok()?;
    sock.bind(std::net::SocketAddr::new(from, 0)).ok()?;
    let tcp = sock.connect(addr.parse().ok()?).await.ok()?;
    let (rd, mut wr) = tcp.into_split();
    let pipeline = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while wr.write_all(pipeline.as_bytes()).await.is_ok() {}
    });
    Some(rd)
}

/// Whether the server has closed `rd`: its end of file (or reset) within `within`.
pub async fn closed_within(rd: &mut tokio::net::tcp::OwnedReadHalf, within: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let end = async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, end).await.is_ok()
}

/// Keeps a client connection alive until the test ends.
pub fn held_too<T: Send + 'static>(send: T, task: tokio::task::JoinHandle<()>) {
    tokio::spawn(async move {
        let _send = send;
        let _ = task.await;
    });
}

pub fn held_clients(c: Client) {
    tokio::spawn(async move {
        let _c = c;
        std::future::pending::<()>().await;
    });
}
