#!/usr/bin/env bash
# Blob uploads (docs/performance.md, "Blob uploads"), on loopback, keys
# made on the fly: Thor serves a `hash` command executor that hashes its
# task's blob (sha256sum of the path in SAGE_BLOBS), Sprout delegates with
# `sage delegate --input-file` a fresh file of SIZE MiB each round. Per
# round, alternating the order:
#
#  - upload:   `delegate --input-file` of a file Thor does not have (hash
#              it, HEAD, PUT streamed, the task, Thor hashes it again);
#  - present:  the same delegation again (HEAD says Thor has it: no body);
#  - baseline: two `sha256sum` passes over the file (the hashing that the
#              delegation cannot avoid: once on each side), and `cp` to
#              Thor's disk with `sync`.
#
# It prints each round, then medians, MB/s of the upload and its ratio to
# the baseline, and peak RSS (VmHWM) of Thor and of the CLI
# (/usr/bin/time -v's maximum resident set size).
#
#   scripts/blob-bench.sh [SIZE_MIB] [ROUNDS]   (default 50 and 3)
#
# SAGE=path/to/sage uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-50}
rounds=${2:-3}

sage=${SAGE:-$(scripts/build-sage)}
. scripts/scratch.sh

"$sage" --keys-dir "$work/keys" keygen --name Thor >/dev/null 2>&1
"$sage" --keys-dir "$work/keys" keygen --name Sprout >/dev/null 2>&1
cat >"$work/sage.toml" <<'TOML'
[executors.hash]
kind = "command"
command = ["sh", "-c", "p=$(printf '%s' \"$SAGE_BLOBS\" | sed 's/^\\[\"//; s/\"\\]$//'); printf '{\"sha256\": \"sha256:%s\"}' \"$(sha256sum \"$p\" | cut -d' ' -f1)\""]
timeout = "120s"
TOML
SAGE_LOG=warn,sage=info "$sage" --keys-dir "$work/keys" --state-dir "$work/thor-state" \
    serve --config "$work/sage.toml" --name Thor --host 127.0.0.1 --port 0 2>"$work/thor.log" &
thor_pid=$!; pids+=("$thor_pid")
for _ in $(seq 400); do
    grep -q 'listening on' "$work/thor.log" && break
    sleep 0.05
done
port=$(sed -n 's/.*listening on http:\/\/.*:\([0-9]*\)$/\1/p' "$work/thor.log")

now() { date +%s.%N; }
delegate() {
    /usr/bin/time -v -o "$work/time.txt" "$sage" --keys-dir "$work/keys" --state-dir "$work/cli-state" \
        delegate --local Sprout --target Thor --port "$port" --task-type hash \
        --input-file "$1" --timeout 120s --json >"$work/out.json"
    python3 - "$work/out.json" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["proof"]["result"]["sha256"] == sys.argv[2], d["proof"]["result"]
PY
}
cli_kib() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.txt"; }

declare -a upload present base cli
for round in $(seq "$rounds"); do
    file="$work/input-$round.bin"
    head -c "$((size * 1024 * 1024))" /dev/urandom >"$file"
    digest="sha256:$(sha256sum "$file" | cut -d' ' -f1)"
    run_base() {
        local t0 t1; t0=$(now)
        sha256sum "$file" >/dev/null; sha256sum "$file" >/dev/null
        cp "$file" "$work/copy.bin"; sync "$work/copy.bin"
        t1=$(now); base+=("$(echo "$t1 - $t0" | bc)"); rm -f "$work/copy.bin"
    }
    run_upload() {
        local t0 t1; t0=$(now); delegate "$file" "$digest"; t1=$(now)
        upload+=("$(echo "$t1 - $t0" | bc)"); cli+=("$(cli_kib)")
        t0=$(now); delegate "$file" "$digest"; t1=$(now)
        present+=("$(echo "$t1 - $t0" | bc)")
    }
    if (( round % 2 )); then run_base; run_upload; else run_upload; run_base; fi
    echo "round $round: upload ${upload[-1]} s, present ${present[-1]} s, baseline ${base[-1]} s, CLI peak ${cli[-1]} KiB"
    rm -f "$file"
done
node_kib=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$thor_pid/status")
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mu=$(median "${upload[@]}"); mp=$(median "${present[@]}"); mb=$(median "${base[@]}"); mc=$(median "${cli[@]}")
echo
echo "| $size MiB, median of $rounds rounds | seconds | MB/s | ratio to baseline |"
echo "| --- | --- | --- | --- |"
printf '| delegate --input-file, blob new | %.2f | %.0f | %.2f |\n' "$mu" "$(echo "$size * 1.048576 / $mu" | bc -l)" "$(echo "$mu / $mb" | bc -l)"
printf '| delegate --input-file, blob present | %.2f | | %.2f |\n' "$mp" "$(echo "$mp / $mb" | bc -l)"
printf '| baseline: 2 x sha256sum + cp + sync | %.2f | %.0f | 1.00 |\n' "$mb" "$(echo "$size * 1.048576 / $mb" | bc -l)"
echo
echo "peak RSS: Thor (VmHWM after all rounds) $((node_kib / 1024)) MiB, CLI (median) $((mc / 1024)) MiB"
