"""Small helpers for the loopback HTTP stubs the tests serve (an OpenAI-compatible endpoint, map servers)."""

from __future__ import annotations

import json


def send_json(handler, status: int, doc) -> None:
    """Answer a `BaseHTTPRequestHandler` request with `doc` as JSON."""
    data = json.dumps(doc).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
