#!/usr/bin/env python3
"""Open N idle keep-alive connections to a sage node and report its RSS.

Each connection sends one `GET /health` with keep-alive, reads the answer,
and then stays open and idle. The node's resident memory is read from
/proc before and after; a request on a fresh connection checks that the
node still answers while holding them all.

usage: idle-connections.py HOST:PORT PID [N]
"""
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


def health(sock, host):
    sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    while len(body) < length:
        body += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head


def main():
    addr, pid = sys.argv[1], int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    host, port = addr.rsplit(":", 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 100), hard))
    before = rss_kib(pid)
    socks = []
    t0 = time.time()
    failure = None
    for _ in range(n):
        try:
            s = socket.create_connection((host, int(port)))
            health(s, addr)
        except OSError as e:  # a file-descriptor limit, ours or the node's
            failure = e
            break
        socks.append(s)
    opened = time.time() - t0
    if failure is not None:
        print(f"stopped after {len(socks)} of {n} connections: {failure}")
        n = len(socks)
    time.sleep(1)
    after = rss_kib(pid)
    probe = socket.create_connection((host, int(port)))
    t1 = time.time()
    health(probe, addr)
    probe_ms = (time.time() - t1) * 1000
    print(f"connections: {n} opened in {opened:.1f} s, all idle")
    print(f"node RSS: {before} KiB before, {after} KiB with them open "
          f"({(after - before) / max(n, 1):.2f} KiB per idle connection)")
    print(f"a fresh request while they are open: {probe_ms:.2f} ms")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
