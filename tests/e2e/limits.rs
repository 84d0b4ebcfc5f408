//! The transport's limits against misbehaving clients on raw sockets:
//! slow headers (slowloris), a trickled body, idle keep-alive connections,
//! and the connection limit.
//!
//! Waits are bounded and generous; what is asserted is what happened (a
//! closed socket, an answer or none), never how fast.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::util::{self, Keys, Node};

/// Thor serving with `[limits]` set to `limits` (TOML lines).
fn node_with_limits(keys: &Keys, limits: &str) -> Node {
    keys.keygen("Thor");
    let config = keys.path().with_file_name("sage.toml");
    std::fs::write(&config, format!("[limits]\n{limits}\n")).unwrap();
    keys.serve("Thor", &["--config", config.to_str().unwrap()])
}

/// What a socket turned out to be after a poll.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// Nothing to read yet, still open.
    Open,
    /// The server closed it (EOF or reset).
    Closed,
    /// Bytes came.
    Data,
}

/// Reads what is there without waiting; appends it to `got`.
fn probe(stream: &mut TcpStream, got: &mut Vec<u8>) -> Probe {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let result = stream.read(&mut buf);
    stream.set_nonblocking(false).unwrap();
    match result {
        Ok(0) => Probe::Closed,
        Ok(n) => {
            got.extend_from_slice(&buf[..n]);
            Probe::Data
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => Probe::Open,
        Err(_) => Probe::Closed,
    }
}

/// Reads one HTTP/1.1 answer (headers and a Content-Length body) off a
/// kept-alive connection: status and body.
fn read_answer(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("an answer");
        assert!(
            n == 1,
            "closed before the headers: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, body)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

fn get_health(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: thor\r\n\r\n")
        .unwrap();
}

#[test]
fn slowloris_headers_are_cut_off_after_the_header_read_timeout() {
    let keys = Keys::new();
    let node = node_with_limits(&keys, "header_read_timeout = \"1s\"");
    let mut slow = connect(node.addr);
    // A head that would take 60 s at one byte per 200 ms.
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: thor\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(300)
    );
    let started = Instant::now();
    let mut got = Vec::new();
    let mut closed = false;
    for (i, byte) in head.bytes().enumerate() {
        if slow.write_all(&[byte]).is_err() {
            closed = true;
            break;
        }
        if i == 3 {
            // Meanwhile another client is served.
            let answer = util::http(node.addr, "GET", "/health", b"");
            assert_eq!(answer.status, 200);
        }
        std::thread::sleep(Duration::from_millis(200));
        match probe(&mut slow, &mut got) {
            Probe::Open => {}
            Probe::Closed => {
                closed = true;
                break;
            }
            Probe::Data => panic!("an answer to half a head: {got:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still open after 20 s; log:\n{}",
            node.log()
        );
    }
    assert!(closed, "the whole head went through; log:\n{}", node.log());
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "closed before the timeout"
    );
    // The node is still fine.
    assert_eq!(util::http(node.addr, "GET", "/health", b"").status, 200);
}

#[test]
fn a_trickled_body_is_cut_off_after_the_body_read_timeout() {
    let keys = Keys::new();
    let node = node_with_limits(&keys, "body_read_timeout = \"1s\"");
    let mut slow = connect(node.addr);
    slow.write_all(
        b"POST /v1/tasks HTTP/1.1\r\nHost: thor\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
    )
    .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    // 1000 bytes at one per 200 ms would take 200 s.
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no answer after 20 s; log:\n{}",
            node.log()
        );
        let _ = slow.write_all(b" ");
        std::thread::sleep(Duration::from_millis(200));
        match probe(&mut slow, &mut got) {
            Probe::Open => {}
            Probe::Data => {}
            Probe::Closed => break,
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.contains("\"code\":\"malformed\"") && text.contains("body_read_timeout"),
        "{text}"
    );
    assert!(started.elapsed() >= Duration::from_millis(950));
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let keys = Keys::new();
    let node = node_with_limits(&keys, "idle_timeout = \"1s\"");
    let mut conn = connect(node.addr);
    // Two requests on one connection: it is kept alive.
    for _ in 0..2 {
        get_health(&mut conn);
        assert_eq!(read_answer(&mut conn).0, 200);
    }
    let answered = Instant::now();
    let mut rest = Vec::new();
    // Blocks until the server closes (or the 20 s read timeout).
    let n = conn
        .read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("not closed within 20 s ({e}); log:\n{}", node.log()));
    assert_eq!(n, 0, "unexpected bytes: {rest:?}");
    assert!(answered.elapsed() >= Duration::from_millis(950));
}

#[test]
fn at_max_connections_the_next_connection_waits_for_a_free_slot() {
    let keys = Keys::new();
    let node = node_with_limits(&keys, "max_connections = 2");
    let mut first = connect(node.addr);
    let mut second = connect(node.addr);
    for conn in [&mut first, &mut second] {
        get_health(conn);
        assert_eq!(read_answer(conn).0, 200);
    }
    // Both stay open (kept alive). A third connects (the kernel's backlog
    // takes it) and asks, but is not served while both are held.
    let mut third = connect(node.addr);
    get_health(&mut third);
    third
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut byte = [0u8; 1];
    match third.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the third connection was served at the limit: {other:?}"),
    }
    // One closes: the third is accepted and answered.
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(read_answer(&mut third).0, 200);
    // The second is still served too.
    get_health(&mut second);
    assert_eq!(read_answer(&mut second).0, 200);
}

#[test]
fn a_silent_connection_is_closed_after_the_header_read_timeout() {
    let keys = Keys::new();
    let node = node_with_limits(
        &keys,
        "header_read_timeout = \"1s\"\nidle_timeout = \"300s\"",
    );
    let mut silent = connect(node.addr);
    let mut rest = Vec::new();
    // Blocks until the server closes it; the 20 s read timeout is far below
    // the idle timeout, so a close in time is the header read timeout's.
    let n = silent
        .read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("not closed within 20 s ({e}); log:\n{}", node.log()));
    assert_eq!(n, 0, "unexpected bytes: {rest:?}");
}

#[test]
fn a_client_that_never_reads_its_answers_does_not_keep_its_slot() {
    let keys = Keys::new();
    let node = node_with_limits(
        &keys,
        "max_connections = 1\nidle_timeout = \"1s\"\nheader_read_timeout = \"1s\"",
    );
    // Pipelined requests whose answers are never read: the node's writes
    // stall once the socket buffers are full.
    let stuck = connect(node.addr);
    let mut writer = stuck.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let request = b"GET /metrics HTTP/1.1\r\nHost: thor\r\n\r\n";
        for _ in 0..200_000 {
            if writer.write_all(request).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    // The only slot is taken; once the stalled connection is given up, the
    // next client is served.
    let mut next = connect(node.addr);
    get_health(&mut next);
    let (status, _) = read_answer(&mut next);
    assert_eq!(status, 200, "log:\n{}", node.log());
    drop(stuck);
    flood.join().unwrap();
}
