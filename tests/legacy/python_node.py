#!/usr/bin/env python3
"""Stand-in for the original Python "SAGE federation" node (client and server).

We do not have the original Python code. This script was written from
the legacy wire protocol as observed by running the original (summarized in
``docs/protocol.md``, "Legacy protocol") and checked against the golden
vectors of ``tests/data/legacy-v0.json``. The Rust end-to-end tests run it to prove
that ``sage`` interoperates with legacy nodes in both directions: a ``sage``
client delegating to this server, and this client delegating to ``sage``.

It deliberately reproduces the original's behaviour, weaknesses included: the
server has no replay protection and never checks ``deadline``,
``max_latency`` or that ``delegating_platform`` equals ``requester_lct_id``.

Only the standard library and ``cryptography`` (Ed25519) are used.

Commands::

    python_node.py serve     --name Thor --keys-dir DIR [--host 127.0.0.1] [--port 0] [--epistemic]
    python_node.py delegate  --name Sprout --keys-dir DIR --url http://HOST:PORT
                             --target-name Thor --target-public-key HEX
                             [--task-type llm_inference] [--task-data JSON]
                             [--estimated-cost 50.0] [--deadline-offset 60] [--task-id ID]
    python_node.py sign-task --name Sprout --keys-dir DIR --request-json FILE_OR_- --deadline FLOAT
    python_node.py canonical < document.json
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

# ---------------------------------------------------------------------------
# Signable objects and canonical bytes
# ---------------------------------------------------------------------------

# The keys of a signed task, in the order the original builds them.
TASK_FIELDS = (
    "task_id",
    "task_type",
    "task_data",
    "estimated_cost",
    "task_horizon",
    "complexity",
    "delegating_platform",
    "delegating_state",
    "quality_requirements",
    "max_latency",
    "deadline",
    "min_witnesses",
    "min_witness_societies",
)

# The keys of a signed execution proof.
PROOF_FIELDS = (
    "task_id",
    "executing_platform",
    "result_data",
    "actual_latency",
    "actual_cost",
    "irp_iterations",
    "final_energy",
    "convergence_quality",
    "quality_score",
    "execution_timestamp",
)

# Also signed, only when the proof carries `epistemic_state`.
EPISTEMIC_FIELDS = (
    "epistemic_state",
    "confidence",
    "comprehension_depth",
    "uncertainty",
    "frustration",
    "learning_trajectory",
    "frustration_pattern",
)


def canonical(obj):
    """The bytes the legacy protocol signs: json.dumps(sort_keys=True) as UTF-8."""
    return json.dumps(obj, sort_keys=True).encode("utf-8")


def signable_task(task):
    """Rebuilds the signable task as the original receiver does.

    Unknown extra keys are dropped; a missing key raises KeyError (-> 500).
    """
    return {field: task[field] for field in TASK_FIELDS}


def signable_proof(proof):
    """Rebuilds the signable proof; the epistemic fields only with `epistemic_state`."""
    fields = PROOF_FIELDS
    if "epistemic_state" in proof:
        fields = PROOF_FIELDS + EPISTEMIC_FIELDS
    return {field: proof[field] for field in fields}


# ---------------------------------------------------------------------------
# Keys and identities
# ---------------------------------------------------------------------------

KEY_SUFFIX = "_ed25519.key"


def lct_id_for(name):
    """A platform's LCT id: `Thor` -> `thor_sage_lct`."""
    return name.lower() + "_sage_lct"


def key_path(keys_dir, name):
    return os.path.join(keys_dir, name + KEY_SUFFIX)


def public_hex(public_key):
    raw = public_key.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )
    return raw.hex()


def load_private_key(path):
    """Loads a key file: the 32-byte seed (the original) or seed + public key (64 bytes).

    On a 64-byte file the public half must match the key derived from the seed.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) not in (32, 64):
        raise ValueError(f"{path}: corrupt key file ({len(data)} bytes, expected 32 or 64)")
    key = Ed25519PrivateKey.from_private_bytes(data[:32])
    if len(data) == 64 and public_hex(key.public_key()) != data[32:].hex():
        raise ValueError(f"{path}: corrupt key file (public half does not match the seed)")
    return key


def sign_hex(private_key, obj):
    """Ed25519 signature over canonical(obj), as 128 lowercase hex characters."""
    return private_key.sign(canonical(obj)).hex()


def verify_hex(public_key, signature_hex, obj):
    """True when signature_hex is a valid signature of canonical(obj)."""
    try:
        public_key.verify(bytes.fromhex(signature_hex), canonical(obj))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def known_platforms(keys_dir, own_name):
    """Every OTHER key file of the key directory is a known platform.

    Returns {lct_id: (name, public_key)}. An unreadable file is skipped with a
    warning on stderr.
    """
    platforms = {}
    for entry in sorted(os.listdir(keys_dir)):
        if not entry.endswith(KEY_SUFFIX):
            continue
        name = entry[: -len(KEY_SUFFIX)]
        if not name or name == own_name:
            continue
        try:
            key = load_private_key(os.path.join(keys_dir, entry))
        except (OSError, ValueError) as e:
            log(f"skipping {entry}: {e}")
            continue
        platforms[lct_id_for(name)] = (name, key.public_key())
    return platforms


def log(message):
    print(f"[python_node] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------

# What `--epistemic` adds to every proof (the values of the third vector).
EPISTEMIC_EXAMPLE = {
    "epistemic_state": "confident",
    "confidence": 0.9,
    "comprehension_depth": 0.8,
    "uncertainty": 0.1,
    "frustration": 0.05,
    "learning_trajectory": True,
    "frustration_pattern": False,
}


def simulate_execution(task, platform_name, execution_timestamp, epistemic=False):
    """Simulates the work as the original does; returns the signable proof."""
    task_type = task["task_type"]
    if task_type == "llm_inference":
        latency = 15.0
    elif task_type == "vision":
        latency = 0.052
    else:
        latency = 0.1
    proof = {
        "task_id": task["task_id"],
        "executing_platform": platform_name,
        "result_data": {
            "status": "success",
            "output": f"Executed {task_type} on {platform_name}",
            "task_type": task_type,
            "echo": task["task_data"],
        },
        "actual_latency": latency,
        "actual_cost": task["estimated_cost"] * 0.92,
        "irp_iterations": 5,
        "final_energy": 0.22,
        "convergence_quality": 0.85,
        "quality_score": 0.78,
        "execution_timestamp": execution_timestamp,
    }
    data = task["task_data"]
    if isinstance(data, dict) and data.get("measure_nan"):
        # What a Python executor can return and json.dumps writes: NaN,
        # infinities and lone surrogates, which are not JSON but are signed.
        proof["result_data"]["measured"] = {
            "loss": float("nan"),
            "peak": float("inf"),
            "floor": float("-inf"),
            "label": "\ud800",
        }
    if epistemic:
        proof.update(EPISTEMIC_EXAMPLE)
    return proof


class HTTPAbort(Exception):
    """Like Flask's abort(code, message)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class LegacyHandler(BaseHTTPRequestHandler):
    """The original's two endpoints; errors as Flask's abort: message in the status line, HTML body."""

    protocol_version = "HTTP/1.1"
    server_version = "SAGEFederation/legacy"
    # Headers and body leave in two writes; without TCP_NODELAY the second
    # waits for the client's delayed ACK (40 ms on Linux), which no real
    # server (werkzeug included) lets happen.
    disable_nagle_algorithm = True

    # Set on the subclass built by make_server().
    platform_name = None
    platform_lct = None
    private_key = None
    platforms = None  # {lct_id: (name, public_key)}
    epistemic = False

    ROUTES = {"/health": "GET", "/execute_task": "POST"}

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def _dispatch(self, method):
        path = urllib.parse.urlsplit(self.path).path
        try:
            if path not in self.ROUTES:
                raise HTTPAbort(404, "Endpoint not found")
            if self.ROUTES[path] != method:
                raise HTTPAbort(405, "Method Not Allowed")
            if path == "/health":
                self._send_json(200, self._health())
            else:
                self._send_json(200, self._execute_task())
        except HTTPAbort as e:
            self._abort(e.code, e.message)
        except Exception as e:  # the original answers any other failure with 500
            log(f"500 on {method} {path}: {type(e).__name__}: {e}")
            self._abort(500, f"Internal error: {type(e).__name__}: {e}")

    def _health(self):
        return {
            "status": "healthy",
            "platform": self.platform_name,
            "lct_id": self.platform_lct,
            "timestamp": time.time(),
        }

    def _execute_task(self):
        length = int(self.headers.get("Content-Length") or 0)
        data = json.loads(self.rfile.read(length))
        task = data["task"]
        requester = data["requester_lct_id"]
        if requester not in self.platforms:
            raise HTTPAbort(403, f"Unknown platform: {requester}")
        _, requester_key = self.platforms[requester]
        # The original rebuilds the signable task and re-serializes it to verify.
        # No replay protection, no deadline / max_latency check, no check that
        # delegating_platform == requester_lct_id: exactly as the original.
        if not verify_hex(requester_key, data["signature"], signable_task(task)):
            raise HTTPAbort(403, "Invalid signature")
        proof = simulate_execution(task, self.platform_name, time.time(), self.epistemic)
        return {
            "proof": proof,
            "signature": sign_hex(self.private_key, proof),
            "timestamp": time.time(),
        }

    def _send_json(self, code, obj):
        body = json.dumps(obj).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _abort(self, code, message):
        # The status line must stay printable ASCII (the LCT id comes from the peer).
        safe = "".join(c if " " <= c <= "~" else "?" for c in message)
        self.send_error(code, safe)

    def log_message(self, format, *args):
        log(f"{self.address_string()} {format % args}")


def make_server(name, keys_dir, host, port, epistemic=False):
    private_key = load_private_key(key_path(keys_dir, name))
    handler = type(
        "BoundLegacyHandler",
        (LegacyHandler,),
        {
            "platform_name": name,
            "platform_lct": lct_id_for(name),
            "private_key": private_key,
            "platforms": known_platforms(keys_dir, name),
            "epistemic": epistemic,
        },
    )
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def cmd_serve(args):
    server = make_server(args.name, args.keys_dir, args.host, args.port, args.epistemic)
    host, port = server.server_address[:2]
    log(f"{args.name} ({lct_id_for(args.name)}) knows: {sorted(server.RequestHandlerClass.platforms)}")

    # serve_forever runs in a thread so that the signal handler (main thread)
    # never calls shutdown() from the serving thread itself.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    print(f"listening on http://{host}:{port}", flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0


# ---------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------

# Local test servers only: ignore any http_proxy of the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

DEFAULT_TASK_DATA = {"query": "What is SAGE consciousness architecture?", "test": True}


def build_task(args, delegating_lct):
    """The signable task, with the original's defaults (as in the vectors)."""
    task_id = args.task_id or f"task_{int(time.time())}_{uuid.uuid4().hex[:8]}"
    task_data = json.loads(args.task_data) if args.task_data is not None else DEFAULT_TASK_DATA
    return {
        "task_id": task_id,
        "task_type": args.task_type,
        "task_data": task_data,
        "estimated_cost": float(args.estimated_cost),
        "task_horizon": {"delta_r": "local", "delta_t": "ephemeral", "delta_c": "simple"},
        "complexity": "low",
        "delegating_platform": delegating_lct,
        "delegating_state": "focus",
        "quality_requirements": {"min_quality": 0.6, "min_convergence": 0.7, "max_energy": 100.0},
        "max_latency": 30.0,
        "deadline": time.time() + args.deadline_offset,
        "min_witnesses": 3,
        "min_witness_societies": 3,
    }


def delegate(args):
    """One delegation as the original client; returns the result object."""
    result = {"ok": False, "status": None, "verified": False, "proof": None, "error": None}
    base = args.url.rstrip("/")
    private_key = load_private_key(key_path(args.keys_dir, args.name))
    target_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(args.target_public_key))

    # 1. Health check (5 s); only status == "healthy" matters.
    try:
        with _OPENER.open(base + "/health", timeout=5) as resp:
            health = json.loads(resp.read())
        if health.get("status") != "healthy":
            result["error"] = f"{args.target_name} is not healthy: {health!r}"
            return result
    except Exception as e:
        result["error"] = f"health check of {args.target_name} failed: {e}"
        return result

    # 2. Build and sign the task, POST it (60 s).
    task = build_task(args, lct_id_for(args.name))
    body = {
        "task": task,
        "requester_lct_id": lct_id_for(args.name),
        "signature": sign_hex(private_key, task),
        "timestamp": time.time(),
    }
    request = urllib.request.Request(
        base + "/execute_task",
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with _OPENER.open(request, timeout=60) as resp:
            result["status"] = resp.status
            raw = resp.read()
    except urllib.error.HTTPError as e:
        result["status"] = e.code
        result["error"] = f"{args.target_name} answered {e.code} {e.reason}"
        return result
    except Exception as e:
        result["error"] = f"request to {args.target_name} failed: {e}"
        return result
    if result["status"] != 200:
        result["error"] = f"{args.target_name} answered {result['status']}"
        return result

    # 3. Verify the proof with the TARGET's public key over the rebuilt signable proof.
    try:
        response = json.loads(raw)
        proof = response["proof"]
        result["proof"] = proof
        result["verified"] = verify_hex(target_key, response["signature"], signable_proof(proof))
    except Exception as e:
        result["error"] = f"malformed response: {type(e).__name__}: {e}"
        return result
    if not result["verified"]:
        result["error"] = f"invalid proof signature from {args.target_name}"
        return result
    result["ok"] = True
    return result


def cmd_delegate(args):
    try:
        result = delegate(args)
    except Exception as e:  # bad key file, bad --target-public-key, bad --task-data
        result = {"ok": False, "status": None, "verified": False, "proof": None,
                  "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


# ---------------------------------------------------------------------------
# Test helpers
# ---------------------------------------------------------------------------


def cmd_sign_task(args):
    """Re-signs a request body with a new deadline (insertion order kept)."""
    if args.request_json == "-":
        raw = sys.stdin.buffer.read()
    else:
        with open(args.request_json, "rb") as f:
            raw = f.read()
    body = json.loads(raw)
    body["task"]["deadline"] = args.deadline
    private_key = load_private_key(key_path(args.keys_dir, args.name))
    body["signature"] = sign_hex(private_key, signable_task(body["task"]))
    print(json.dumps(body), flush=True)
    return 0


def cmd_canonical(args):
    """Prints canonical(stdin) with no trailing newline."""
    sys.stdout.buffer.write(canonical(json.loads(sys.stdin.buffer.read())))
    sys.stdout.buffer.flush()
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the legacy server")
    p.add_argument("--name", required=True)
    p.add_argument("--keys-dir", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port")
    p.add_argument("--epistemic", action="store_true",
                   help="add the epistemic fields (as in the third proof vector) to every proof")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("delegate", help="one delegation as the legacy client")
    p.add_argument("--name", required=True)
    p.add_argument("--keys-dir", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--target-name", required=True)
    p.add_argument("--target-public-key", required=True)
    p.add_argument("--task-type", default="llm_inference")
    p.add_argument("--task-data", default=None, help="JSON object")
    p.add_argument("--estimated-cost", type=float, default=50.0)
    p.add_argument("--deadline-offset", type=float, default=60.0,
                   help="deadline = now + offset (negative: already past)")
    p.add_argument("--task-id", default=None, help="default: a fresh unique id")
    p.set_defaults(func=cmd_delegate)

    p = sub.add_parser("sign-task", help="re-sign a request body with a new deadline")
    p.add_argument("--name", required=True)
    p.add_argument("--keys-dir", required=True)
    p.add_argument("--request-json", required=True, help="file, or - for stdin")
    p.add_argument("--deadline", type=float, required=True)
    p.set_defaults(func=cmd_sign_task)

    p = sub.add_parser("canonical", help="print canonical(stdin)")
    p.set_defaults(func=cmd_canonical)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
