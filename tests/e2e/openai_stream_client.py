"""The real `openai` package streaming chat completions from a sage node's
local API.

Usage: openai_stream_client.py SOCKET PORT TOKEN MODEL

Prints one JSON line per event as it happens, flushed, so that the test
that runs it feeds the backend the next piece only once the previous one
reached this client:

- `{"phase": P, "piece": TEXT}` for each piece of content;
- `{"phase": P, "done": ...}` at the end of a stream that ended well: the
  text, its sha256 computed here, the receipt of the last chunk, the
  `x-sage-task-id` header;
- `{"phase": "cut", "error": ...}` for the `openai.APIError` a stream cut
  midway raises, with the pieces that came before;
- `{"phase": "early", "error": ...}` for a delegation that failed before
  any piece: the ordinary error answer.

Phases in order: "socket" (over the Unix socket), "port" (over the
loopback port with the bearer token), "cut", "early".
"""

import hashlib
import json
import sys

import openai

try:  # openai 3.x is built on httpx2, earlier versions on httpx.
    import httpx2 as httpx
except ImportError:
    import httpx

socket, port, token, model = sys.argv[1:5]


def say(line):
    print(json.dumps(line), flush=True)


over_socket = openai.OpenAI(
    api_key="unused",
    base_url="http://localhost/local/v1",
    http_client=openai.DefaultHttpxClient(transport=httpx.HTTPTransport(uds=socket)),
    max_retries=0,
)
over_port = openai.OpenAI(
    api_key=token,
    base_url="http://127.0.0.1:%s/local/v1" % port,
    max_retries=0,
)


def stream(phase, client):
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "a story, " + phase}],
        stream=True,
    )
    task_id = raw.headers.get("x-sage-task-id")
    content_type = raw.headers.get("content-type")
    text, roles, receipt, finish, usage, ids = "", [], None, None, None, set()
    for chunk in raw.parse():
        assert chunk.object == "chat.completion.chunk", chunk
        ids.add(chunk.id)
        extra = chunk.model_extra or {}
        if "sage_receipt" in extra:
            assert receipt is None, "one receipt, in the last chunk"
            receipt = extra["sage_receipt"]
        assert receipt is None or "sage_receipt" in extra, "nothing after the receipt"
        for choice in chunk.choices:
            roles.append(choice.delta.role)
            if choice.finish_reason:
                finish = choice.finish_reason
            if choice.delta.content:
                text += choice.delta.content
                say({"phase": phase, "piece": choice.delta.content})
        if chunk.usage is not None:
            usage = chunk.usage.model_dump(exclude_none=True)
    return {
        "phase": phase,
        "done": True,
        "text": text,
        "digest": "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "receipt": receipt,
        "task_id": task_id,
        "content_type": content_type,
        "ids": sorted(ids),
        "roles": roles,
        "finish_reason": finish,
        "usage": usage,
    }


say(stream("socket", over_socket))
say(stream("port", over_port))

# A stream cut by the backend midway: an error event, which the package
# raises, after the pieces that came.
text, task_id = "", None
try:
    raw = over_socket.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "cut"}], stream=True
    )
    task_id = raw.headers.get("x-sage-task-id")
    for chunk in raw.parse():
        assert "sage_receipt" not in (chunk.model_extra or {}), chunk
        for choice in chunk.choices:
            if choice.delta.content:
                text += choice.delta.content
                say({"phase": "cut", "piece": choice.delta.content})
    raise AssertionError("a cut stream ended without an error")
except openai.APIStatusError:
    raise
except openai.APIError as e:
    say(
        {
            "phase": "cut",
            "error": {"message": e.message, "code": e.code, "type": e.type},
            "text": text,
            "task_id": task_id,
        }
    )

# A delegation that fails before any piece: the ordinary error answer.
try:
    for _ in over_socket.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "early"}], stream=True
    ):
        raise AssertionError("a piece of a failed delegation")
    raise AssertionError("a failed delegation streamed")
except openai.APIStatusError as e:
    say(
        {
            "phase": "early",
            "error": {"status": e.status_code, "code": e.code, "message": e.message},
        }
    )
