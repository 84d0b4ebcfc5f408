#!/usr/bin/env bash
# The delegator's ledger and large inputs, for docs/performance.md: each
# binary given is measured in turn, round after round (alternating, so
# that the machine's drift falls on all alike), every `sage bench` run with
# `--baseline` so that its figure is also a ratio against the bare echo
# endpoint measured in the same run.
#
#   scripts/benchmarks/ledger-and-payloads.sh SECONDS ROUNDS SAGE_BINARY...
#
# Per round and binary: concurrency 32 without a ledger, with `--ledger`
# (and with `--ledger --ledger-durability crash` where the binary has it);
# echo inputs of 64 KiB, 512 KiB and 4 MiB at concurrency 1 and 8 (MB/s of
# input delegated, the node's peak RSS); the node's database bytes per task.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:?seconds per run}; rounds=${2:?rounds}; shift 2
. scripts/scratch.sh

python3 - "$work" <<'PY'
import json, sys
for name, size in [("64k", 64 << 10), ("512k", 512 << 10), ("4m", 4 << 20)]:
    with open(f"{sys.argv[1]}/input-{name}.json", "w") as f:
        json.dump({"data": "x" * size}, f)
PY
cat >"$work/row.py" <<'PY'
import json, sys
label, size = sys.argv[1], int(sys.argv[2])
d = json.load(sys.stdin)
s, b = d["sage"], d["baseline"]
mbs = s["per_second"] * size / 1e6 if size else 0
print(f"{label}\t{s['per_second']:.0f}/s\t{mbs:.1f} MB/s\tratio {d['ratio_to_baseline']:.3f}\terrors {sum(s['errors'].values())}")
PY

run_binary() {
    local sage=$1 tag=$2 dir="$work/$2"
    rm -rf "$dir"; mkdir -p "$dir"
    "$sage" --keys-dir "$dir" keygen --name Thor >/dev/null 2>&1
    "$sage" --keys-dir "$dir" keygen --name Sprout >/dev/null 2>&1
    SAGE_LOG=warn,sage=info "$sage" --keys-dir "$dir" --state-dir "$dir/thor-state" serve --name Thor \
        --host 127.0.0.1 --port 0 --max-body-bytes 16777216 2>"$dir/thor.log" &
    local pid=$!; pids+=($pid)
    for _ in $(seq 100); do grep -q 'listening on' "$dir/thor.log" 2>/dev/null && break; sleep 0.1; done
    local thor; thor=$(sed -n 's/.*listening on http:\/\/\(.*\)$/\1/p' "$dir/thor.log")
    bench() { "$sage" --keys-dir "$dir" --state-dir "$dir/client-state" bench --local Sprout --target "$thor" --json --baseline "$@"; }
    bench --concurrency 32 --duration "$secs" | python3 "$work/row.py" "$tag c=32 no ledger" 0
    bench --concurrency 32 --duration "$secs" --ledger | python3 "$work/row.py" "$tag c=32 ledger" 0
    if "$sage" bench --help | grep -q -- --ledger-durability; then
        bench --concurrency 32 --duration "$secs" --ledger --ledger-durability crash |
            python3 "$work/row.py" "$tag c=32 ledger crash" 0
    fi
    local db_before tasks_before
    for size in 64k 512k 4m; do
        local bytes; bytes=$(stat -c %s "$work/input-$size.json")
        for c in 1 8; do
            db_before=$(du -sb "$dir/thor-state" | cut -f1)
            bench --concurrency "$c" --duration "$secs" --input "@$work/input-$size.json" \
                --max-answer-bytes 67108864 >"$dir/out.json"
            python3 "$work/row.py" "$tag $size c=$c" "$bytes" <"$dir/out.json"
            local ok; ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sage"]["ok"])' "$dir/out.json")
            local db_after; db_after=$(du -sb "$dir/thor-state" | cut -f1)
            echo -e "$tag $size c=$c\tnode VmHWM $(grep VmHWM /proc/$pid/status | awk '{print $2}') kB\tdb +$(( (db_after - db_before) / (ok > 0 ? ok : 1) )) bytes/task over $ok tasks"
        done
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r); $secs s runs"
for round in $(seq "$rounds"); do
    i=0
    for sage in "$@"; do
        i=$((i + 1))
        echo "# round $round, binary $i: $sage"
        run_binary "$sage" "r$round.b$i"
    done
done
