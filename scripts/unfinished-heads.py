#!/usr/bin/env python3
"""Open N connections to a sage node, each sending K bytes of a request
head that never ends, and report the node's RSS.

Each connection sends a request line, a Host header and one header field
of filler, without the blank line that would end the head, and then stays
open. A head over the node's max_header_bytes (default 64 KiB) is answered
431 and its connection closed; one under it is held by the node until its
header_read_timeout (default 10 s): give the node a longer one to measure
the memory of heads held. The node's resident memory (VmRSS in
/proc/PID/status) is read before, while the connections are opened (the
highest reading), once all are open, and after they are closed; a fresh
request meanwhile checks that the node still answers.

All connections come from one address unless --sources spreads them over
127.0.0.1 .. 127.0.0.S: the node closes those beyond its
max_connections_per_address (default 512) at once.

usage: unfinished-heads.py HOST:PORT PID [N [K]] [--sources S]
       (defaults: N = 1000 connections, K = 300000 bytes, S = 1)
"""
import argparse
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def unfinished_head(host, size):
    start = f"GET /health HTTP/1.1\r\nHost: {host}\r\nX-Filler: ".encode()
    return start + b"a" * max(size - len(start), 0)


def health_ms(host, port):
    t = time.time()
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    return (time.time() - t) * 1000


def answer_of(sock):
    """What the node did with a connection: 431, closed, or nothing yet."""
    sock.setblocking(False)
    try:
        data = sock.recv(64)
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"
    if data.startswith(b"HTTP/1.1 431"):
        return "431"
    return "closed" if not data else "other"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("addr", metavar="HOST:PORT")
    parser.add_argument("pid", type=int, metavar="PID")
    parser.add_argument("n", type=int, nargs="?", default=1000, metavar="N")
    parser.add_argument("size", type=int, nargs="?", default=300_000, metavar="K")
    parser.add_argument("--sources", type=int, default=1, metavar="S")
    args = parser.parse_args()
    pid, n, size, sources = args.pid, args.n, args.size, args.sources
    host, port = args.addr.rsplit(":", 1)
    port = int(port)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 100)), hard))

    head = unfinished_head(host, size)
    before = rss_kib(pid)
    peak = before
    socks, failures = [], 0
    t0 = time.time()
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((f"127.0.0.{1 + i % sources}", 0))
            s.settimeout(10)
            s.connect((host, port))
            s.sendall(head)
        except OSError:  # closed by the node mid-send, or a descriptor limit
            failures += 1
        socks.append(s)
        if i % 50 == 0:
            peak = max(peak, rss_kib(pid))
    opened = time.time() - t0
    time.sleep(1)
    during = rss_kib(pid)
    peak = max(peak, during)
    probe = health_ms(host, port)
    outcomes = {}
    for s in socks:
        outcome = answer_of(s)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    for s in socks:
        s.close()
    time.sleep(2)
    after = rss_kib(pid)

    print(f"{n} connections from {sources} address(es), each an unfinished head of {size} bytes, "
          f"sent in {opened:.1f} s ({failures} sends cut short by the node)")
    print("what the node did: " + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
    print(f"node RSS: {mib(before)} before, {mib(peak)} at most while opening, "
          f"{mib(during)} with them all open, {mib(after)} after closing them "
          f"(+{mib(max(peak, during) - before)} at most)")
    print(f"a fresh request meanwhile: {probe:.2f} ms")


if __name__ == "__main__":
    main()
