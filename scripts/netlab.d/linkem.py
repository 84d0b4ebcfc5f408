#!/usr/bin/env python3
"""A user-space link emulator for scripts/netlab: netem's `delay` and `loss`
for kernels built without sch_netem (CONFIG_NET_SCH_NETEM).

It copies Ethernet frames between two TAP devices, in both directions,
holding each frame for --delay-ms and dropping each with probability
--loss percent, independently per direction and in order (like netem
without jitter). netlab puts it between a node's veth and the bridge:

    node veth <-> [bridge sl-NODE-lk] <-> TAP a <-> linkem <-> TAP b <-> [bridge sl-br0]

A TAP without a virtio-net header gets whole frames with checksums filled
in: the kernel segments and checksums before handing them over, so veth
offloads need no changes.

    linkem.py --a TAP_A --b TAP_B [--delay-ms 25] [--loss 1] [--ready FILE]

Runs until SIGTERM/SIGINT, then prints what it forwarded and dropped.
"""

import argparse
import collections
import fcntl
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="TAP device on the node's side")
    ap.add_argument("--b", required=True, help="TAP device on the bridge's side")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="added one-way delay, each direction")
    ap.add_argument("--loss", type=float, default=0.0, help="percent of frames dropped, each direction")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--ready", help="file to create once both TAPs are open")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    delay = args.delay_ms / 1000.0
    loss = args.loss / 100.0
    fds = {"a": open_tap(args.a), "b": open_tap(args.b)}
    other = {"a": "b", "b": "a"}
    # Frames waiting to leave towards a side: (release time, frame), in order.
    queues = {"a": collections.deque(), "b": collections.deque()}
    stats = {k: 0 for k in ("a>b", "b>a", "a>b dropped", "b>a dropped", "write failed")}

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    if args.ready:
        with open(args.ready, "w") as f:
            f.write(f"{os.getpid()}\n")

    by_fd = {fd: side for side, fd in fds.items()}
    while not stop:
        now = time.monotonic()
        due = [q[0][0] for q in queues.values() if q]
        timeout = max(0.0, min(due) - now) if due else 0.5
        try:
            readable, _, _ = select.select(list(by_fd), [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in readable:
            side = by_fd[fd]
            to = other[side]
            while True:
                try:
                    frame = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError as e:
                    # The TAP is gone (its namespace or device was deleted).
                    print(f"linkem: reading {getattr(args, side)}: {e}; exiting", file=sys.stderr)
                    stop.append(1)
                    break
                if not frame:
                    break
                if loss and rng.random() < loss:
                    stats[f"{side}>{to} dropped"] += 1
                    continue
                queues[to].append((now + delay, frame))
                stats[f"{side}>{to}"] += 1
        now = time.monotonic()
        for side, q in queues.items():
            while q and q[0][0] <= now:
                _, frame = q.popleft()
                try:
                    os.write(fds[side], frame)
                except OSError:
                    stats["write failed"] += 1  # the TAP went down: the frame is lost
    print(
        f"linkem {args.a}<->{args.b} delay {args.delay_ms} ms loss {args.loss} %: "
        + ", ".join(f"{k} {v}" for k, v in stats.items()),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
