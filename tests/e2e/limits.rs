//! The transport's limits against misbehaving clients on raw sockets:
//! slow headers (slowloris), a trickled body, idle keep-alive connections,
//! request heads over `max_header_bytes`, the connections of one address,
//! and the connection limit.
//!
//! A second client address is a second loopback address (127.0.0.2, ...):
//! Linux routes all of 127.0.0.0/8 to the loopback interface.
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

/// A connection to `addr` from the loopback address `source`: another
/// client as far as the per-address limit goes.
fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(format!("{source}:0").parse().unwrap())
            .unwrap_or_else(|e| panic!("cannot bind {source}: {e}"));
        socket.connect(addr).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// `sage_connections_closed_total{reason}`, read from `source`.
fn closed_total(node: &Node, source: &str, reason: &str) -> u64 {
    let mut conn = connect_from(source, node.addr);
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: thor\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (status, body) = read_answer(&mut conn);
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let series = format!("sage_connections_closed_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// Whether the server closed `stream` (EOF or reset) within its read
/// timeout, with nothing sent on it.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("bytes on a connection expected to be closed"),
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
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

/// Two connections to `addr`, each kept alive after one `GET /health`
/// answered 200.
fn two_kept_alive(addr: SocketAddr) -> (TcpStream, TcpStream) {
    let mut first = connect(addr);
    let mut second = connect(addr);
    for conn in [&mut first, &mut second] {
        get_health(conn);
        assert_eq!(read_answer(conn).0, 200);
    }
    (first, second)
}

#[test]
fn at_max_connections_the_idlest_connection_makes_room_for_a_new_one() {
    let keys = Keys::new();
    let node = node_with_limits(&keys, "max_connections = 2");
    let (mut first, mut second) = two_kept_alive(node.addr);
    // Both stay open (kept alive); the first has been idle the longest. A
    // newcomer (from another address: 127.0.0.1 holds its two already) is
    // served at once, in the first one's place.
    let mut third = connect_from("127.0.0.2", node.addr);
    let started = Instant::now();
    get_health(&mut third);
    assert_eq!(read_answer(&mut third).0, 200, "log:\n{}", node.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the newcomer waited {:?}",
        started.elapsed()
    );
    assert!(closed_by_server(&mut first), "the idlest was not closed");
    get_health(&mut second);
    assert_eq!(read_answer(&mut second).0, 200);
    assert!(closed_total(&node, "127.0.0.3", "evicted_idle") >= 1);
}

#[test]
fn at_max_connections_no_request_in_progress_is_cut_and_a_newcomer_waits() {
    let keys = Keys::new();
    let node = node_with_limits(&keys, "max_connections = 2\nbody_read_timeout = \"60s\"");
    // Two requests in progress: heads complete, bodies not sent yet.
    let head = b"POST /v1/tasks HTTP/1.1\r\nHost: thor\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n";
    let mut first = connect(node.addr);
    let mut second = connect(node.addr);
    for conn in [&mut first, &mut second] {
        conn.write_all(head).unwrap();
    }
    // Time for the node to read both heads (it takes well under this).
    std::thread::sleep(Duration::from_millis(500));
    let mut third = connect_from("127.0.0.2", node.addr);
    get_health(&mut third);
    third
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut byte = [0u8; 1];
    match third.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a connection in a request made room: {other:?}"),
    }
    // One closes: the newcomer gets its slot.
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(read_answer(&mut third).0, 200);
    // The other request was not cut: its body is read and answered.
    second.write_all(b"not json!!").unwrap();
    let (status, body) = read_answer(&mut second);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn one_address_over_its_cap_is_closed_at_accept_while_another_is_served() {
    let keys = Keys::new();
    let node = node_with_limits(&keys, "max_connections_per_address = 2");
    let (mut first, mut second) = two_kept_alive(node.addr);
    let mut over = connect(node.addr);
    assert!(
        closed_by_server(&mut over),
        "a third connection from 127.0.0.1 stayed open; log:\n{}",
        node.log()
    );
    let mut other = connect_from("127.0.0.2", node.addr);
    get_health(&mut other);
    assert_eq!(read_answer(&mut other).0, 200);
    // Those within the cap are still served.
    for conn in [&mut first, &mut second] {
        get_health(conn);
        assert_eq!(read_answer(conn).0, 200);
    }
    assert_eq!(closed_total(&node, "127.0.0.3", "per_address_cap"), 1);
    // A place freed is a place again, once the node has seen it close.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while util::try_http(node.addr, "GET", "/health", b"").is_none() {
        assert!(Instant::now() < deadline, "no place again after 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `head` on a new connection; the answer, and whether the server
/// then closed the connection.
fn send_head(node: &Node, head: &[u8]) -> (u16, String, serde_json::Value, bool) {
    let mut conn = connect(node.addr);
    conn.write_all(head).unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.read(&mut byte).unwrap(), 1, "closed before an answer");
        raw.push(byte[0]);
    }
    let headers = String::from_utf8(raw).unwrap();
    let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = headers
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let closed = closed_by_server(&mut conn);
    (status, headers, json, closed)
}

#[test]
fn a_request_head_over_max_header_bytes_is_answered_431_with_a_problem_and_closed() {
    let keys = Keys::new();
    let node = node_with_limits(&keys, "");
    let head = |value_bytes: usize| {
        format!(
            "GET /health HTTP/1.1\r\nHost: thor\r\nX-Filler: {}\r\n\r\n",
            "a".repeat(value_bytes)
        )
    };
    // 100 KB, over the default 64 KiB.
    let (status, headers, problem, closed) = send_head(&node, head(100_000).as_bytes());
    assert_eq!(status, 431, "{headers}\n{problem}\nlog:\n{}", node.log());
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{headers}"
    );
    assert_eq!(problem["code"], "too_large", "{problem}");
    assert_eq!(problem["status"], 431, "{problem}");
    assert_eq!(problem["type"], "urn:sage:problem:too_large");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("65536 bytes (max_header_bytes)"),
        "{detail}"
    );
    assert!(closed, "the connection stayed open after the 431");

    // More header fields than the node takes: the same answer.
    let many: String = (0..150).map(|i| format!("X-Field-{i}: a\r\n")).collect();
    let (status, _, problem, closed) = send_head(
        &node,
        format!("GET /health HTTP/1.1\r\nHost: thor\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!((status, problem["code"].as_str()), (431, Some("too_large")));
    assert!(closed);

    // Under the limit, a head is served.
    let under = head(60_000).replace("Host: thor\r\n", "Host: thor\r\nConnection: close\r\n");
    let (status, _, _, _) = send_head(&node, under.as_bytes());
    assert_eq!(status, 200);
    assert_eq!(closed_total(&node, "127.0.0.1", "head_too_large"), 2);
}

#[test]
fn max_header_bytes_can_be_lowered() {
    let keys = Keys::new();
    let node = node_with_limits(&keys, "max_header_bytes = 8192");
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: thor\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let (status, _, problem, _) = send_head(&node, head.as_bytes());
    assert_eq!(status, 431);
    assert!(
        problem["detail"].as_str().unwrap().contains("8192 bytes"),
        "{problem}"
    );
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
    // The only slot is taken; the stalled connection (no request in
    // progress, only an answer nobody reads) makes room for the next
    // client (from another address: 127.0.0.1 holds its one already).
    let mut next = connect_from("127.0.0.2", node.addr);
    get_health(&mut next);
    let (status, _) = read_answer(&mut next);
    assert_eq!(status, 200, "log:\n{}", node.log());
    drop(stuck);
    flood.join().unwrap();
}
