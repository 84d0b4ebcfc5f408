#!/usr/bin/env bash
# The main job, on one machine: two nodes (Thor and Sprout) with keys made on
# the fly in a temporary directory, each trusting the other's public key,
# each delegating a signed task to the other and verifying the signed proof.
set -euo pipefail
cd "$(dirname "$0")/.."

sage=$(scripts/build-sage)
. scripts/scratch.sh

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Keys, made on the fly in $work"
thor_pub=$("$sage" --keys-dir "$work/thor" keygen --name Thor 2>/dev/null)
sprout_pub=$("$sage" --keys-dir "$work/sprout" keygen --name Sprout 2>/dev/null)
echo "Thor   $thor_pub"
echo "Sprout $sprout_pub"

# Start a node on a free port; set $port once it listens.
serve() {
    local name=$1 dir=$2 log=$work/$1.log
    "$sage" --keys-dir "$dir" --state-dir "$dir-state" serve --name "$name" --host 127.0.0.1 --port 0 >/dev/null 2>"$log" &
    pids+=($!)
    for _ in $(seq 100); do
        if grep -q 'listening on' "$log"; then
            port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log")
            return
        fi
        sleep 0.1
    done
    cat "$log" >&2
    exit 1
}

step "Each node trusts the other's public key (sage peer add), then serves"
"$sage" --keys-dir "$work/thor" peer add --name Sprout --public-key "$sprout_pub"
"$sage" --keys-dir "$work/sprout" peer add --name Thor --public-key "$thor_pub"
serve Thor "$work/thor"; thor_port=$port
serve Sprout "$work/sprout"; sprout_port=$port
# Record where each listens (same key, so this updates the record in place).
"$sage" --keys-dir "$work/thor" peer add --name Sprout --public-key "$sprout_pub" --address "127.0.0.1:$sprout_port"
"$sage" --keys-dir "$work/sprout" peer add --name Thor --public-key "$thor_pub" --address "127.0.0.1:$thor_port"

step "sage health 127.0.0.1:$thor_port"
"$sage" health "127.0.0.1:$thor_port"

step "Sprout delegates an llm_inference task to Thor"
"$sage" --keys-dir "$work/sprout" --state-dir "$work/sprout-state" delegate --local Sprout --target Thor \
    --task-type llm_inference --input '{"query": "What is SAGE consciousness architecture?"}'

step "Thor delegates an echo task to Sprout"
"$sage" --keys-dir "$work/thor" --state-dir "$work/thor-state" delegate --local Thor --target Sprout \
    --task-type echo --input '{"frame": "frame_000123.jpg", "shape": [480, 640, 3]}'

step "Sprout's receipts: sage proofs list, then verified offline from an export"
"$sage" --keys-dir "$work/sprout" --state-dir "$work/sprout-state" proofs list
"$sage" --keys-dir "$work/sprout" --state-dir "$work/sprout-state" proofs export --out "$work/receipts.jsonl"
"$sage" --keys-dir "$work/sprout" proofs verify "$work/receipts.jsonl"

step "Thor's log"
cat "$work/Thor.log"
