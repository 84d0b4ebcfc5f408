#!/usr/bin/env bash
# Streaming through sage (docs/performance.md, "Streaming"), on loopback,
# keys made on the fly: a mock OpenAI-compatible backend streams TOKENS
# tokens DELAY_MS apart (or, to a request without "stream": true, the
# same after the same time, whole); Thor fronts it with an `http` executor in OpenAI
# mode; Sprout delegates with `sage delegate --stream` (a process each).
# Alternating rounds of REQUESTS requests each, one at a time:
#
#  - direct: a Python client posts the chat request with "stream": true to
#            the backend and reads its events (the baseline);
#  - sage:   `sage delegate --local Sprout --target Thor --stream`, stdout
#            read as it comes: signing, health check, the node's verify,
#            record, the executor's stream, the proof and its check;
#  - whole:  the same without --stream: the output comes with the proof;
#  - local:  the local API of a serving Sprout: POST /local/v1/chat/completions
#            with "stream": true over its Unix socket (Python's http.client),
#            the relayed chunks read as they come, the receipt in the last;
#  - openai: the same through the `openai` package (one client for the
#            run, `stream=True`), if it is installed.
#
# Time to first token (TTFT) is from the start of the request (for sage,
# of the process) to the first content byte; time to last token (TTLT) to
# the last one; for `whole` both are when the result is printed, read
# from its --json report at the exit.
#
#   scripts/stream-bench.sh [REQUESTS] [ROUNDS] [TOKENS] [DELAY_MS]   (default 20 3 50 5)
#
# SAGE=path/to/sage uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-20}
rounds=${2:-3}
tokens=${3:-50}
delay_ms=${4:-5}

sage=${SAGE:-$(scripts/build-sage)}
. scripts/scratch.sh

# The backend: prints its port, then serves until killed.
python3 - "$tokens" "$delay_ms" >"$work/backend.port" <<'PY' &
import http.server, json, sys, time
tokens, delay = int(sys.argv[1]), int(sys.argv[2]) / 1000
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Each event in its own segment at once, as a real server's streaming
    # answer: with Nagle's algorithm the first event after the headers
    # waits for the client's delayed ACK (about 40 ms on Linux).
    disable_nagle_algorithm = True
    def log_message(self, *args):
        pass
    def do_POST(self):
        asked = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if not asked.get("stream"):
            # The same tokens at the same pace, answered whole at the end.
            time.sleep(delay * (tokens - 1))
            content = "".join(f"tok{i} " for i in range(tokens))
            body = json.dumps({"model": "mock", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        def send(data):
            event = f"data: {data}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        for i in range(tokens):
            if i:
                time.sleep(delay)
            send(json.dumps({"model": "mock", "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}]}))
        send(json.dumps({"model": "mock", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        send("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
pids+=("$!")
for _ in $(seq 100); do [[ -s $work/backend.port ]] && break; sleep 0.05; done
backend="127.0.0.1:$(cat "$work/backend.port")"

public() { "$sage" --keys-dir "$work/$1" key show --name "$1" --public-only; }
for name in Thor Sprout; do
    "$sage" --keys-dir "$work/$name" keygen --name "$name" >/dev/null 2>&1
done
cat >"$work/Thor.toml" <<TOML
[executors.llm_inference]
kind = "http"
url = "http://$backend/v1/chat/completions"
mode = "openai"
model = "mock"
timeout = "60s"
TOML
"$sage" --keys-dir "$work/Thor" peer add --name Sprout --public-key "$(public Sprout)" >/dev/null
log="$work/Thor.log"
SAGE_LOG=warn,sage=info "$sage" --keys-dir "$work/Thor" --state-dir "$work/Thor-state" \
    serve --config "$work/Thor.toml" --name Thor --host 127.0.0.1 --port 0 2>"$log" &
pids+=("$!")
for _ in $(seq 400); do grep -q 'listening on' "$log" && break; sleep 0.05; done
addr=$(sed -n 's/.*listening on http:\/\/\(.*\)$/\1/p' "$log" | tail -1)
"$sage" --keys-dir "$work/Sprout" peer add --name Thor --public-key "$(public Thor)" \
    --address "$addr" >/dev/null
# Sprout serving too, for its local API (a state directory of its own:
# the delegate command's ledger is another).
slog="$work/Sprout.log"
SAGE_LOG=warn,sage=info "$sage" --keys-dir "$work/Sprout" --state-dir "$work/Sprout-node" \
    serve --name Sprout --host 127.0.0.1 --port 0 2>"$slog" &
pids+=("$!")
for _ in $(seq 400); do grep -q 'listening on' "$slog" && [[ -S $work/Sprout-node/sage.sock ]] && break; sleep 0.05; done

python3 - "$sage" "$work" "$backend" "$requests" "$rounds" "$tokens" <<'PY'
import http.client, json, os, statistics as st, subprocess, sys, time
sage, work, backend, requests, rounds, tokens = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:])
host, port = backend.split(":")
body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "go"}], "stream": True})
def pieces(answer):
    """Reads an OpenAI SSE answer: when its first and last pieces of
    content came, their text, and the last `sage_receipt` seen."""
    first = last = receipt = None
    text = ""
    for line in answer:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        receipt = chunk.get("sage_receipt", receipt)
        piece = chunk["choices"][0]["delta"].get("content")
        if piece:
            now = time.perf_counter()
            first = first or now
            last = now
            text += piece
    return first, last, text, receipt
def direct():
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, int(port))
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    first, last, text, _ = pieces(conn.getresponse())
    conn.close()
    return first - start, last - start, text
cmd = [sage, "--keys-dir", f"{work}/Sprout", "--state-dir", f"{work}/Sprout-state", "delegate",
       "--local", "Sprout", "--target", "Thor", "--task-type", "llm_inference",
       "--input", '{"prompt": "go"}', "--stream"]
def via_sage():
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = last = None
    text = b""
    while chunk := os.read(child.stdout.fileno(), 65536):
        now = time.perf_counter()
        first = first or now
        last = now
        text += chunk
    assert child.wait() == 0, "sage delegate --stream failed"
    return first - start, last - start, text.decode()
whole_cmd = [c for c in cmd if c != "--stream"] + ["--json"]
def whole():
    start = time.perf_counter()
    out = subprocess.run(whole_cmd, check=True, capture_output=True).stdout
    done = time.perf_counter() - start
    return done, done, json.loads(out)["proof"]["result"]["content"]
import socket as unix
class Local(http.client.HTTPConnection):
    def connect(self):
        self.sock = unix.socket(unix.AF_UNIX, unix.SOCK_STREAM)
        self.sock.connect(f"{work}/Sprout-node/sage.sock")
def local():
    start = time.perf_counter()
    conn = Local("localhost")
    conn.request("POST", "/local/v1/chat/completions", body, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    assert answer.status == 200, answer.read()
    first, last, text, receipt = pieces(answer)
    conn.close()
    assert receipt, "no receipt in the last chunk"
    return first - start, last - start, text
modes = {"direct": direct, "local": local}
try:
    import openai
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx
    client = openai.OpenAI(api_key="unused", base_url="http://localhost/local/v1", max_retries=0,
        http_client=openai.DefaultHttpxClient(transport=httpx.HTTPTransport(uds=f"{work}/Sprout-node/sage.sock")))
    def via_openai():
        start = time.perf_counter()
        first = last = receipt = None
        text = ""
        for chunk in client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "go"}], stream=True):
            receipt = (chunk.model_extra or {}).get("sage_receipt", receipt)
            if chunk.choices and chunk.choices[0].delta.content:
                now = time.perf_counter()
                first = first or now
                last = now
                text += chunk.choices[0].delta.content
        assert receipt, "no receipt in the last chunk"
        return first - start, last - start, text
    modes["openai"] = via_openai
except ImportError:
    print("no openai package: its mode is left out", file=sys.stderr)
expected = "".join(f"tok{i} " for i in range(tokens))
modes.update({"sage": via_sage, "whole": whole})
ttft = {m: [] for m in modes}
ttlt = {m: [] for m in modes}
for r in range(rounds):
    order = list(modes) if r % 2 == 0 else list(reversed(modes))
    for mode in order:
        firsts, lasts = [], []
        for _ in range(requests):
            first, last, text = modes[mode]()
            assert text == expected, (mode, text[:80])
            firsts.append(first * 1000)
            lasts.append(last * 1000)
        ttft[mode].append(st.median(firsts))
        ttlt[mode].append(st.median(lasts))
        print(f"round {r + 1} {mode}: TTFT median {st.median(firsts):.2f} ms, TTLT median {st.median(lasts):.2f} ms", file=sys.stderr)
base_first, base_last = st.median(ttft["direct"]), st.median(ttlt["direct"])
for mode in modes:
    first, last = st.median(ttft[mode]), st.median(ttlt[mode])
    rate = (tokens - 1) / ((last - first) / 1000) if last > first else float("nan")
    print(f"{mode:6} TTFT {first:8.2f} ms (+{first - base_first:6.2f} ms over direct)   "
          f"TTLT {last:8.2f} ms (x{last / base_last:.3f} of direct)   {rate:5.0f} tokens/s after the first")
PY
