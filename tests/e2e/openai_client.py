"""The real `openai` package against a sage node's local API.

Usage: openai_client.py SOCKET PORT TOKEN MODEL

Lists the models and makes chat completions over the node's Unix socket and
over its token-guarded loopback port, checks what it can, and prints one
JSON object (the receipt ids, the headers, the contents) for the test that
runs it to check against the node's ledger.
"""

import json
import sys

import openai

try:  # openai 3.x is built on httpx2, earlier versions on httpx.
    import httpx2 as httpx
except ImportError:
    import httpx

socket, port, token, model = sys.argv[1:5]
report = {}

# (a) The models, over the socket (the socket checks the caller, not a key).
over_socket = openai.OpenAI(
    api_key="unused",
    base_url="http://localhost/local/v1",
    http_client=openai.DefaultHttpxClient(transport=httpx.HTTPTransport(uds=socket)),
    max_retries=0,
)
models = [m.id for m in over_socket.models.list()]
assert model in models, models
report["models"] = models

# (b) A chat completion over the socket, with the receipt in the headers.
raw = over_socket.chat.completions.with_raw_response.create(
    model=model,
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello over the socket"},
    ],
    temperature=0.2,
    max_tokens=16,
    user="ignored-by-sage",
)
completion = raw.parse()
assert completion.object == "chat.completion", completion
assert completion.choices[0].message.role == "assistant", completion
assert completion.choices[0].finish_reason == "stop", completion
assert completion.usage.total_tokens == 5, completion
receipt = raw.headers.get("x-sage-receipt-id")
assert receipt, dict(raw.headers)
assert completion.id == "chatcmpl-" + receipt, (completion.id, receipt)
report["socket"] = {
    "content": completion.choices[0].message.content,
    "model": completion.model,
    "receipt_id": receipt,
    "task_digest": raw.headers.get("x-sage-task-digest"),
    "proof_digest": raw.headers.get("x-sage-proof-digest"),
    "executor": raw.headers.get("x-sage-executor"),
}

# (c) The same over the loopback port, the bearer token as the API key.
over_port = openai.OpenAI(
    api_key=token,
    base_url="http://127.0.0.1:%s/local/v1" % port,
    max_retries=0,
)
raw = over_port.chat.completions.with_raw_response.create(
    model=model,
    messages=[{"role": "user", "content": "hello over the port"}],
)
completion = raw.parse()
report["port"] = {
    "content": completion.choices[0].message.content,
    "receipt_id": raw.headers.get("x-sage-receipt-id"),
}

# A wrong key on the port is refused.
try:
    openai.OpenAI(
        api_key="not-the-token",
        base_url="http://127.0.0.1:%s/local/v1" % port,
        max_retries=0,
    ).models.list()
    raise AssertionError("a wrong token was accepted")
except openai.AuthenticationError:
    report["wrong_token"] = "refused"

# (d) A model no node serves.
try:
    over_socket.chat.completions.create(
        model="no-such-model", messages=[{"role": "user", "content": "hi"}]
    )
    raise AssertionError("an unknown model was answered")
except openai.NotFoundError as e:
    report["unknown_model"] = {"status": e.status_code, "code": e.code}

print(json.dumps(report))
