#!/usr/bin/env bash
# The local API's overhead (docs/performance.md, "The local API"), on
# loopback, keys made on the fly: Thor serves the builtin echo, Sprout
# serves its local API and knows Thor. The same echo task, REQUESTS times
# per mode and round, ROUNDS alternating rounds, one request at a time:
#
#  - cli:      `sage delegate --local Sprout --target Thor` (a process each);
#  - via-node: `sage delegate --via-node --target Thor` (a process each,
#              the node signs and verifies);
#  - socket:   POST /local/v1/tasks over the socket from one Python
#              process (what an application pays).
#
#   scripts/local-api-bench.sh [REQUESTS] [ROUNDS]   (default 200 and 3)
#
# SAGE=path/to/sage uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-200}
rounds=${2:-3}

sage=${SAGE:-$(scripts/build-sage)}
. scripts/scratch.sh

public() { "$sage" --keys-dir "$work/$1" key show --name "$1" --public-only; }
for name in Thor Sprout; do
    "$sage" --keys-dir "$work/$name" keygen --name "$name" >/dev/null 2>&1
    : >"$work/$name.toml"
done
"$sage" --keys-dir "$work/Thor" peer add --name Sprout --public-key "$(public Sprout)" >/dev/null

# serve NAME: starts NAME's node on a free port and waits until it
# listens; sets addr_NAME.
serve() {
    local name=$1 log="$work/$1.log"
    : >"$log"
    SAGE_LOG=warn,sage=info "$sage" --keys-dir "$work/$name" --state-dir "$work/$name-state" \
        serve --config "$work/$name.toml" --name "$name" --host 127.0.0.1 --port 0 2>"$log" &
    pids+=("$!")
    for _ in $(seq 400); do
        grep -q 'listening on' "$log" && break
        sleep 0.05
    done
    printf -v "addr_$name" %s "$(sed -n 's/.*listening on http:\/\/\(.*\)$/\1/p' "$log" | tail -1)"
}
serve Thor
"$sage" --keys-dir "$work/Sprout" peer add --name Thor --public-key "$(public Thor)" \
    --address "$addr_Thor" >/dev/null
serve Sprout
socket="$work/Sprout-state/sage.sock"
for _ in $(seq 100); do [[ -S $socket ]] && break; sleep 0.05; done

python3 - "$sage" "$work" "$socket" "$requests" "$rounds" <<'PY'
import json, socket, statistics as st, subprocess, sys, time
sage, work, sock, requests, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
base = [sage, "--keys-dir", f"{work}/Sprout", "--state-dir", f"{work}/Sprout-state", "delegate",
        "--target", "Thor", "--task-type", "echo", "--input", '{"n": 1}']
def cli():
    subprocess.run(base + ["--local", "Sprout"], check=True, stdout=subprocess.DEVNULL)
def via_node():
    subprocess.run(base + ["--via-node"], check=True, stdout=subprocess.DEVNULL)
body = json.dumps({"task_type": "echo", "input": {"n": 1}, "target": "Thor"}).encode()
def post():
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(b"POST /local/v1/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    answer = b""
    while chunk := s.recv(65536):
        answer += chunk
    s.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
modes = {"cli": cli, "via-node": via_node, "socket": post}
medians = {m: [] for m in modes}
for r in range(rounds):
    order = list(modes) if r % 2 == 0 else list(reversed(modes))
    for mode in order:
        times = []
        for _ in range(requests):
            t = time.perf_counter()
            modes[mode]()
            times.append((time.perf_counter() - t) * 1000)
        medians[mode].append(st.median(times))
        print(f"round {r + 1} {mode}: median {st.median(times):.2f} ms", file=sys.stderr)
cli_ms = st.median(medians["cli"])
for mode in modes:
    m = st.median(medians[mode])
    print(f"{mode:9} median of round medians {m:8.2f} ms   ratio to cli {m / cli_ms:.3f}")
PY
