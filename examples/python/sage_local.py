"""A client for the local API of a `sage` node: standard library only,
Python 3.8 or later.

The node signs each task with its own key, routes it through the fleet
(or sends it to the peer named), verifies the signed proof and keeps the
receipt; this client only talks to its own node, over the node's Unix
socket or its token-guarded loopback port. Nothing here holds a key.

    from sage_local import Node
    node = Node()                                   # $SAGE_SOCKET or /run/sage/sage.sock
    answer = node.delegate("echo", {"text": "hi"})  # routed; target="Thor" to choose
    print(answer["result"], answer["receipt"]["id"])

Run as a program it delegates one task and prints the answer as JSON:

    python3 sage_local.py [--socket PATH | --url URL --token-file FILE] \
        TASK_TYPE ['{"json": "input"}'] [--target NAME]
"""

import argparse
import http.client
import json
import os
import socket
import sys
import urllib.parse

__all__ = ["Node", "SageError", "DEFAULT_SOCKET"]

#: Where `sage serve` puts its socket under systemd (`RuntimeDirectory=sage`);
#: without systemd it is `STATE_DIR/sage.sock`.
DEFAULT_SOCKET = "/run/sage/sage.sock"


class SageError(Exception):
    """A problem the node answered (`application/problem+json`), or an
    answer that is not one of the local API's.

    `code` is the delegation's code (`no_candidate`, `unknown_target`,
    `timed_out`, `invalid_signature`, ...), `status` the HTTP status, and
    `problem` the whole answer, `attempts` included.
    """

    def __init__(self, status, code, detail, problem=None):
        super().__init__("{} ({}): {}".format(code, status, detail))
        self.status = status
        self.code = code
        self.detail = detail
        self.problem = problem or {}

    @property
    def attempts(self):
        """Every peer tried and what came of it."""
        return self.problem.get("attempts", [])


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket: the host name only fills the header."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Node:
    """The local API of one node.

    With neither `socket_path` nor `url`, the socket is `$SAGE_SOCKET` or
    `DEFAULT_SOCKET`. `url` (e.g. `http://127.0.0.1:50052`) is the loopback
    port a container uses, with the bearer `token` of `[local] token_file`.
    `timeout` bounds each request in seconds; a task's own `timeout` should
    stay below it.
    """

    def __init__(self, socket_path=None, url=None, token=None, timeout=90.0):
        if url is not None and socket_path is not None:
            raise ValueError("give a socket path or a URL, not both")
        self._url = urllib.parse.urlsplit(url) if url is not None else None
        if self._url is not None and self._url.scheme != "http":
            raise ValueError("the loopback port speaks plain http: {!r}".format(url))
        self._socket = socket_path or os.environ.get("SAGE_SOCKET") or DEFAULT_SOCKET
        self._token = token
        self._timeout = timeout

    def delegate(
        self,
        task_type,
        input=None,
        *,
        target=None,
        prefer=None,
        idempotent=None,
        timeout=None,
        quality=None,
        max_cost=None,
    ):
        """Runs one task through the fleet and returns the node's answer:
        `result`, `status`, `executor`, `receipt` (`id`, `task_digest`,
        `proof_digest`), `timing` and `attempts`.

        Raises `SageError` when no verified proof came back.
        """
        body = {"task_type": task_type, "input": {} if input is None else input}
        for key, value in (
            ("target", target),
            ("prefer", prefer),
            ("idempotent", idempotent),
            ("timeout", timeout),
            ("quality", quality),
            ("max_cost", max_cost),
        ):
            if value is not None:
                body[key] = value
        return self._request("POST", "/local/v1/tasks", body)

    def task(self, task_id):
        """What the node's ledger says of a task's attempts."""
        return self._request("GET", "/local/v1/tasks/" + urllib.parse.quote(task_id, safe=""))

    def receipt(self, task_id):
        """The signed task and proof, as the node keeps them (verifiable
        offline with `sage proofs verify`)."""
        return self._request("GET", "/local/v1/receipts/" + urllib.parse.quote(task_id, safe=""))

    def models(self):
        """The model names the fleet's verified capabilities offer."""
        return [m["id"] for m in self._request("GET", "/local/v1/models")["data"]]

    def chat(self, model, messages, **options):
        """One OpenAI-style chat completion (`temperature`, `max_tokens`,
        ... as keyword arguments); returns the completion and the receipt
        headers as `(completion, {"receipt_id", "task_digest",
        "proof_digest", "executor"})`."""
        body = dict(options, model=model, messages=messages)
        completion, headers = self._exchange("POST", "/local/v1/chat/completions", body)
        receipt = {
            key: headers.get("x-sage-" + key.replace("_", "-"))
            for key in ("receipt_id", "task_digest", "proof_digest", "executor")
        }
        return completion, receipt

    def _connection(self):
        if self._url is None:
            return _UnixConnection(self._socket, self._timeout)
        return http.client.HTTPConnection(
            self._url.hostname, self._url.port or 80, timeout=self._timeout
        )

    def _request(self, method, path, body=None):
        return self._exchange(method, path, body)[0]

    def _exchange(self, method, path, body):
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self._token is not None:
            headers["Authorization"] = "Bearer " + self._token
        conn = self._connection()
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            answer_headers = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        try:
            answer = json.loads(raw.decode("utf-8"))
        except ValueError:
            raise SageError(response.status, "not_json", raw[:200].decode("utf-8", "replace"))
        if response.status >= 400:
            # A problem of the local API, or the OpenAI error shape.
            error = answer.get("error") if isinstance(answer.get("error"), dict) else answer
            raise SageError(
                response.status,
                error.get("code") or "error",
                error.get("detail") or error.get("message") or "",
                answer,
            )
        return answer, answer_headers


def _main(argv=None):
    parser = argparse.ArgumentParser(description="Delegate one task through the local sage node.")
    parser.add_argument("task_type")
    parser.add_argument("input", nargs="?", default="{}", help="the task's input, JSON")
    parser.add_argument("--target", help="a peer's name; without it, routed")
    parser.add_argument("--socket", help="the node's socket (default $SAGE_SOCKET or %s)" % DEFAULT_SOCKET)
    parser.add_argument("--url", help="the node's loopback port, e.g. http://127.0.0.1:50052")
    parser.add_argument("--token-file", help="the bearer token for --url")
    args = parser.parse_args(argv)
    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    try:
        node = Node(socket_path=args.socket, url=args.url, token=token)
        answer = node.delegate(args.task_type, json.loads(args.input), target=args.target)
    except SageError as e:
        print("sage_local: {}".format(e), file=sys.stderr)
        for attempt in e.attempts:
            print("  tried {}: {}".format(attempt.get("peer"), attempt.get("outcome")), file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print("sage_local: {}".format(e), file=sys.stderr)
        return 2
    json.dump(answer, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
