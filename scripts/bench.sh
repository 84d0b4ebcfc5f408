#!/usr/bin/env bash
# Reproducible load figures for docs/performance.md, all on loopback, with
# keys made on the fly: sage against its in-process bare echo baseline at
# concurrency 32 and 1, the legacy endpoint, the Python stand-in node, the
# memory of 10,000 idle keep-alive connections, and that of connections
# holding unfinished request heads, over and under max_header_bytes.
#
#   scripts/bench.sh [SECONDS_PER_RUN]     (default 10; CI runs it with 2)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}

sage=$(scripts/build-sage)
. scripts/scratch.sh

"$sage" --keys-dir "$work" keygen --name Thor >/dev/null 2>&1
"$sage" --keys-dir "$work" keygen --name Sprout >/dev/null 2>&1

# Room for the 10,000 idle connections of the idle probe, all from
# 127.0.0.1 (the default limits.max_connections is 4096, and
# max_connections_per_address 512).
printf '[limits]\nmax_connections = 12000\nmax_connections_per_address = 12000\n' >"$work/sage.toml"
# The banner (sage=info) but no line per task (sage_service=warn).
SAGE_LOG=warn,sage=info "$sage" --keys-dir "$work" --state-dir "$work/thor-state" serve --config "$work/sage.toml" --name Thor --host 127.0.0.1 --port 0 2>"$work/thor.log" &
thor_pid=$!; pids+=($thor_pid)
python3 tests/legacy/python_node.py serve --name Sprout --keys-dir "$work" >"$work/sprout.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 100); do
    grep -q 'listening on' "$work/thor.log" 2>/dev/null && grep -q 'listening on' "$work/sprout.out" 2>/dev/null && break
    sleep 0.1
done
thor=$(sed -n 's/.*listening on http:\/\/\(.*\)$/\1/p' "$work/thor.log")
sprout=$(sed -n 's/.*listening on http:\/\/\(.*\)$/\1/p' "$work/sprout.out")

bench() { "$sage" --keys-dir "$work" --state-dir "$work/client-state" bench --local "$1" --target "$2" --duration "$secs" --json "${@:3}"; }
row() { python3 "$work/row.py" "$1"; }
cat >"$work/row.py" <<'PY'
import json, sys
name, d = sys.argv[1], json.load(sys.stdin)
def line(label, r):
    l = r["latency_ms"]
    errors = sum(r["errors"].values())
    cpu = r["cpu_ms"] * 1e3 / max(r["ok"], 1) if r["cpu_ms"] is not None else float("nan")
    print(f"| {label} | {r['per_second']:.0f} | {l['p50']:.3f} | {l['p99']:.3f} | {l['p999']:.3f} | {cpu:.0f} | {errors} |")
line(name, d["sage"])
if d.get("baseline"):
    line(name + ", bare echo baseline", d["baseline"])
    print(f"| ratio to baseline | {d['ratio_to_baseline']:.3f} | | | | | |")
PY

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "runs of ${secs} s each, client and server on loopback, echo executor, every proof verified"
echo
echo "| run | per second | p50 ms | p99 ms | p99.9 ms | client CPU µs/req | errors |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
bench Sprout "$thor" --concurrency 32 --baseline | row "sage v1, concurrency 32"
bench Sprout "$thor" --concurrency 1 --baseline | row "sage v1, concurrency 1"
bench Sprout "$thor" --concurrency 1 --protocol legacy | row "sage legacy endpoint, concurrency 1"
"$sage" --keys-dir "$work" peer add --name Sprout --public-key "$("$sage" --keys-dir "$work" key show --name Sprout --public-only)" >/dev/null
bench Thor "$sprout" --concurrency 1 --protocol legacy | row "Python stand-in node, concurrency 1"
bench Sprout "$thor" --concurrency 32 --rate 2000 | row "sage v1, open loop 2000/s"
echo
python3 scripts/idle-connections.py "$thor" "$thor_pid" 10000
echo
# A few hundred here; the figures in docs/performance.md are of 1,000
# (scripts/unfinished-heads.py's default).
python3 scripts/unfinished-heads.py "$thor" "$thor_pid" 200 300000
python3 scripts/unfinished-heads.py "$thor" "$thor_pid" 200 60000
