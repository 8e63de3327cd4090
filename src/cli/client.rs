//! The CLI's side of the admin socket: one HTTP/1.1 request per connection,
//! written by hand over a std `UnixStream` (no async runtime in the CLI).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// An answer: its status and its body, the JSON text as sent.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `body` is the request's JSON text, if it has one.
pub fn call(socket: &Path, method: &str, target: &str, body: Option<&[u8]>) -> Result<Reply, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        use std::io::ErrorKind::*;
        match e.kind() {
            NotFound | ConnectionRefused => format!(
                "no tinyscale server is running (nothing answers on {}); start it with `tinyscale serve`, \
                 or point the CLI at its config with -c",
                socket.display()
            ),
            PermissionDenied => format!("not allowed to use {} (see unix_socket_permission)", socket.display()),
            _ => format!("cannot reach the server on {}: {e}", socket.display()),
        }
    })?;
    let timeout = Some(Duration::from_secs(60));
    let _ = s.set_read_timeout(timeout);
    let _ = s.set_write_timeout(timeout);
    let payload = body.unwrap_or_default();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: tinyscale\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    );
    s.write_all(head.as_bytes()).map_err(|e| format!("sending to the server: {e}"))?;
    s.write_all(payload).map_err(|e| format!("sending to the server: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("reading the server's answer: {e}"))?;
    parse_reply(&raw)
}

/// Reads one whole HTTP/1.1 answer of the admin socket (plain or chunked body).
pub fn parse_reply(raw: &[u8]) -> Result<Reply, String> {
    let bad = || "the server's answer was not understood".to_string();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad())?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body).ok_or_else(bad)?;
    }
    Ok(Reply { status, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).ok()?.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_plain_and_chunked() {
        let r = parse_reply(b"HTTP/1.1 404 Not Found\r\ncontent-length: 13\r\n\r\n{\"code\":404}\n").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, b"{\"code\":404}\n".as_slice()));
        let r =
            parse_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!(r.body, b"{\"a\":1}");
        assert!(parse_reply(b"garbage").is_err());
    }
}
