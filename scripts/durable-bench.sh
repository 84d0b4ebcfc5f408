#!/usr/bin/env bash
# The node's durable path, two builds against each other: alternating
# rounds of `sage bench` (echo, every proof verified) against a node of
# each build, at concurrency 32 and 1, with `--durability power-loss` and
# `crash`, each run with the client's in-process bare echo baseline in the
# same run (`--baseline`), so that rounds compare as ratios. Then the
# node's system calls per task (`strace -c -f` on the node during a
# `sage bench --requests N`), for each build and durability.
#
#   scripts/durable-bench.sh BEFORE_SAGE AFTER_SAGE [SECONDS] [ROUNDS] [N]
#
# One client binary (AFTER's) drives both nodes. Prints JSON lines, one a
# run, and the syscall counts; docs/performance.md has the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1 after=$2 secs=${3:-4} rounds=${4:-3} n=${5:-2000}
. scripts/scratch.sh
client=$after
"$client" --keys-dir "$work" keygen --name Thor >/dev/null 2>&1
"$client" --keys-dir "$work" keygen --name Sprout >/dev/null 2>&1

start_node() { # BINARY DURABILITY STATE_DIR -> sets node, node_pid
    SAGE_LOG=warn,sage=info "$1" --keys-dir "$work" --state-dir "$3" serve --name Thor --host 127.0.0.1 --port 0 --durability "$2" 2>"$work/node.log" &
    node_pid=$!
    for _ in $(seq 100); do grep -q 'listening on' "$work/node.log" 2>/dev/null && break; sleep 0.1; done
    node=$(sed -n 's/.*listening on http:\/\/\(.*\)$/\1/p' "$work/node.log")
}
stop_node() { kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; }
bench() { "$client" --keys-dir "$work" --state-dir "$work/client" bench --local Sprout --target "$node" --json "$@"; }

for round in $(seq "$rounds"); do
    for build in before after; do
        bin=${!build}
        for durability in power-loss crash; do
            start_node "$bin" "$durability" "$work/state-$build-$durability"
            for c in 32 1; do
                bench --concurrency "$c" --duration "$secs" --baseline |
                    python3 -c '
import json, sys
d = json.load(sys.stdin); s = d["sage"]; l = s["latency_ms"]
print(json.dumps({"round": int(sys.argv[1]), "build": sys.argv[2], "durability": sys.argv[3], "c": int(sys.argv[4]),
  "per_second": round(s["per_second"]), "p50_ms": l["p50"], "baseline_per_second": round(d["baseline"]["per_second"]),
  "ratio": round(d["ratio_to_baseline"], 3), "errors": sum(s["errors"].values())}))' "$round" "$build" "$durability" "$c"
            done
            stop_node
        done
    done
done

for build in before after; do
    bin=${!build}
    for durability in power-loss crash; do
        start_node "$bin" "$durability" "$work/strace-$build-$durability"
        for c in 1; do
            strace -c -f -p "$node_pid" -o "$work/strace.txt" 2>/dev/null &
            strace_pid=$!
            sleep 1
            bench --concurrency "$c" --requests "$n" >/dev/null
            kill -INT "$strace_pid"; wait "$strace_pid" 2>/dev/null || true
            python3 - "$work/strace.txt" "$n" "$build" "$durability" "$c" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
calls = {}
for line in open(path):
    parts = line.split()
    if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
        calls[parts[-1]] = int(parts[3])
total = sum(calls.values())
top = sorted(calls.items(), key=lambda kv: -kv[1])[:12]
print(f"syscalls/task {sys.argv[3]} {sys.argv[4]} c={sys.argv[5]}: {total / n:.1f} |",
      " ".join(f"{k}={v / n:.2f}" for k, v in top))
PY
        done
        stop_node
    done
done
