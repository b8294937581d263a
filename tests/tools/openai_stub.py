"""An OpenAI-compatible chat endpoint on 127.0.0.1 that answers every SED prompt after a fixed delay,
like a remote model (which cannot exist on this machine), and records when each request arrived and
when its answer left. Used by the concurrency test and by the README's `cosim bench sed` figures:

    python -m tests.tools.openai_stub --delay 1 --port 8765 &
    OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=unused \\
        cosim bench sed --scenario helsinki --agents 50 --llm openai:stub --max-concurrency 8 --json

The answer picks, for every agent the prompt asks about, route (position in the prompt + round) mod 2
in the compact form, so answers differ between subsets and rounds but are reproducible.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.tools.http import send_json


def asked_ids(texts: list[str]) -> list[str]:
    """The agent ids an SED prompt asks about, from its messages' texts (the first user message names
    them; a re-ask adds a message)."""
    first = next(t for t in texts if "these agents:" in t)
    return [x.strip() for x in first.rsplit("these agents:", 1)[1].strip().rstrip(".").split(",")]


class DelayedStub(BaseHTTPRequestHandler):
    delay = 1.0
    lock = threading.Lock()
    records: list[dict] = []  # one per request: arrived, answered (perf_counter seconds), ids

    def do_POST(self):  # noqa: N802 - http.server API
        arrived = time.perf_counter()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ids = asked_ids([m["content"] for m in body["messages"]])
        feedback = "Feedback from the previous round" in body["messages"][1]["content"]
        time.sleep(self.delay)
        routes = [(i + int(feedback)) % 2 for i in range(len(ids))]
        with self.lock:
            self.records.append({"arrived": arrived, "answered": time.perf_counter(), "ids": ids, "routes": routes})
        send_json(self, 200, {
            "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": json.dumps({"routes": routes})}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
        })  # fmt: skip

    def log_message(self, *args):
        pass


def serve(delay: float, port: int = 0) -> tuple[ThreadingHTTPServer, type[DelayedStub]]:
    """A running stub on 127.0.0.1 (port 0: any free one) with its own handler class and records."""
    handler = type("Stub", (DelayedStub,), {"delay": delay, "records": [], "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=1.0, help="seconds before each answer")
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    server, _ = serve(args.delay, args.port)
    print(f"stub on http://127.0.0.1:{server.server_port}/v1, {args.delay:g} s per answer", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
