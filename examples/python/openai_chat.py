"""The official `openai` package against the local API of a `sage` node.

Code that already uses `openai` changes one thing, the client: the node's
OpenAI-compatible endpoint signs each request as a task, sends it to a
peer that serves the model, verifies the signed proof and keeps the
receipt, whose id and digests come back in the response headers.

    python3 openai_chat.py [--socket PATH | --url URL --token-file FILE] \
        [--model NAME] [--stream] "Why is the sky blue?"

Without `--model` it takes the first model the fleet offers.
"""

import argparse
import os
import sys

import openai

try:  # openai 3.x is built on httpx2, earlier versions on httpx
    import httpx2 as httpx
except ImportError:
    import httpx


def client_for(socket_path=None, url=None, token=None):
    """An `openai.OpenAI` client that talks to the node: over its Unix
    socket (the api key is not checked there: the kernel says who calls),
    or over its loopback port with the bearer token."""
    if url is not None:
        return openai.OpenAI(base_url=url.rstrip("/") + "/local/v1", api_key=token)
    socket_path = socket_path or os.environ.get("SAGE_SOCKET", "/run/sage/sage.sock")
    transport = httpx.HTTPTransport(uds=socket_path)
    return openai.OpenAI(
        base_url="http://localhost/local/v1",
        api_key="unused",
        http_client=openai.DefaultHttpxClient(transport=transport),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt")
    parser.add_argument("--model")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--socket")
    parser.add_argument("--url")
    parser.add_argument("--token-file")
    args = parser.parse_args(argv)
    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    client = client_for(args.socket, args.url, token)
    model = args.model or client.models.list().data[0].id
    messages = [{"role": "user", "content": args.prompt}]

    if args.stream:
        # Tokens as they come; the last chunk carries the receipt, once the
        # node has verified the signed proof over the whole output.
        # A failure after pieces came (the stream cut, or not what the
        # proof signs) is an error event, raised as `openai.APIError`.
        receipt = None
        try:
            for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    print(chunk.choices[0].delta.content, end="", flush=True)
                extra = getattr(chunk, "model_extra", None) or {}
                receipt = extra.get("sage_receipt", receipt)
        except openai.APIError as e:
            print()
            print("not verified, discard what was shown:", e.message, file=sys.stderr)
            return 1
        print()
        print("receipt:", receipt, file=sys.stderr)
        return 0 if receipt else 1

    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    completion = raw.parse()
    print(completion.choices[0].message.content)
    print(
        "receipt:",
        raw.headers.get("x-sage-receipt-id"),
        "ran on",
        raw.headers.get("x-sage-executor"),
        "proof",
        raw.headers.get("x-sage-proof-digest"),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
