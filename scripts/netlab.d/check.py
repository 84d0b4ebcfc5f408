#!/usr/bin/env python3
"""JSON checks and arithmetic for scripts/netlab (so the harness needs no jq).

    check.py proof FILE --lct LCT --address ADDR [--input JSON] [--kind echo]
        exit 0 if FILE (the output of `sage delegate --json`) is a verified,
        accepted proof of a succeeded task run by LCT at ADDR (whose result
        is INPUT, for echo); else print why and exit 1.
    check.py field FILE PATH            print a field, PATH like proof.started_at
    check.py bench FILE                 print "ok errors p50 p99 errors-by-kind" of `sage bench --json`
    check.py ping FILE                  print "p50 sent received" of ping's output (p50 "-" if none)
    check.py pctl P                     nearest-rank percentile P of the numbers on stdin
    check.py guide WARM RTT [COLD]      where delegations (ms) fall against the LAN or internet figures of the Python original's deployment guide
"""

import json
import math
import re
import sys


def load(path):
    with open(path) as f:
        text = f.read()
    if not text.strip():
        raise SystemExit("no JSON output")
    try:
        return json.loads(text)
    except ValueError as e:
        raise SystemExit(f"output is not JSON: {e}")


def proof(argv):
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--lct", required=True)
    ap.add_argument("--address", required=True)
    ap.add_argument("--input")
    ap.add_argument("--kind")
    a = ap.parse_args(argv)
    d = load(a.file)
    p = d.get("proof") or {}
    problems = []
    if d.get("verified") is not True:
        problems.append("not verified")
    if d.get("accepted") is not True:
        problems.append(f"not accepted ({d.get('shortfall')})")
    if d.get("address") != a.address:
        problems.append(f"address {d.get('address')} != {a.address}")
    if p.get("executor") != a.lct:
        problems.append(f"executor {p.get('executor')} != {a.lct}")
    if p.get("status") != "succeeded":
        problems.append(f"status {p.get('status')}")
    if (d.get("task") or {}).get("task_id") != p.get("task_id"):
        problems.append("proof names another task")
    if a.kind and p.get("executor_kind") != a.kind:
        problems.append(f"executor kind {p.get('executor_kind')} != {a.kind}")
    if a.input is not None and p.get("result") != json.loads(a.input):
        problems.append(f"result {json.dumps(p.get('result'))} != input {a.input}")
    if problems:
        print("; ".join(problems))
        sys.exit(1)


def field(path, dotted):
    v = load(path)
    for part in dotted.split("."):
        v = v[part] if isinstance(v, dict) else v[int(part)]
    print(json.dumps(v) if isinstance(v, (dict, list)) else v)


def bench(path):
    d = load(path)["sage"]
    lat = d["latency_ms"]
    errors = d["errors"]
    kinds = ",".join(f"{k}={v}" for k, v in sorted(errors.items())) or "-"
    print(d["ok"], sum(errors.values()), lat["p50"], lat["p99"], kinds)


def ping(path):
    with open(path) as f:
        text = f.read()
    times = sorted(float(t) for t in re.findall(r"time=([0-9.]+) ms", text))
    m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    sent, received = (m.group(1), m.group(2)) if m else ("0", "0")
    print(f"{pctl_of(times, 50):.3f}" if times else "-", sent, received)


def pctl_of(values, p):
    values = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[rank - 1]


def guide(warm, rtt, cold=None):
    """The regime of the Python original's deployment guide for this round trip (LAN below 20 ms, else
    internet) and where the warm (and cold) delegation falls against it."""
    rtt = float(rtt) if rtt not in ("-", "") else 0.0
    lo, hi, regime = (50, 100, "LAN") if rtt < 20 else (100, 500, "internet")

    def where(ms):
        ms = float(ms)
        if ms < lo:
            return f"{lo / ms:.1f}x below" if ms > 0 else "below"
        if ms <= hi:
            return "inside"
        return f"{ms / hi:.1f}x above"

    text = f"{regime} {lo}-{hi} ms: warm {where(warm)}"
    if cold not in (None, "", "-"):
        text += f", cold {where(cold)}"
    return text


def main():
    cmd, argv = sys.argv[1], sys.argv[2:]
    if cmd == "proof":
        proof(argv)
    elif cmd == "field":
        field(*argv)
    elif cmd == "bench":
        bench(*argv)
    elif cmd == "ping":
        ping(*argv)
    elif cmd == "pctl":
        values = [float(x) for x in sys.stdin.read().split()]
        print(f"{pctl_of(values, float(argv[0])):.3f}" if values else "-")
    elif cmd == "guide":
        print(guide(*argv))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
