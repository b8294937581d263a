"""Reliability of `cosim demos` and of the on-demand demonstrations (issue 12).

* `--out` never deletes what the command did not write, and a bad `--out` fails before any work.
* An LLM backend that cannot be reached, or never answers, ends the run with one `error:` line instead
  of free-flow fallbacks that look like expert plans; mostly-fallback demonstrations are never cached,
  neither as a demonstrations folder nor as answers in the LangChain cache, so once the backend works
  the next run really asks it.

Every backend here is a real HTTP endpoint on 127.0.0.1 (a closed port, a socket that accepts and never
answers, an OpenAI-compatible stub): the remote APIs themselves cannot exist on this machine.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from langchain_core.language_models import FakeListChatModel

from llm.errors import LLMError
from llm.sed import SED, SEDConfig, write_outputs
from tests.tools.http import send_json
from tests.tools.openai_stub import asked_ids

SECRET = "sk-cosim-reliability-SECRET-42"
SMALL = ["--agents", "4", "--subset-size", "2", "--rounds", "1", "--rollouts", "2", "--no-random-baseline"]


def answer(ids: list[str], route: int) -> str:
    return json.dumps({"choices": [{"agent": a, "route": route, "reason": "test"} for a in ids]})


class Stub(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint: `mode` "plans" answers route 1 for every agent asked about,
    "prose" answers text that is no plan, "401" refuses the key, "500-echo" fails with the key in its
    message. Counts the requests it gets."""

    mode = "plans"
    requests = 0

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests += 1
        if self.mode == "401":
            return self._send(401, {"error": {"message": "invalid key", "type": "invalid_request_error"}})
        if self.mode == "500-echo":  # a server that puts the key it was sent into its error message
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            return self._send(500, {"error": {"message": f"internal error while serving key {key}", "type": "server"}})
        ids = asked_ids([m["content"] for m in body["messages"]])
        content = answer(ids, 1) if self.mode == "plans" else "I would take the ring road, it is nice."
        self._send(200, {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        })  # fmt: skip

    def _send(self, status: int, doc: dict) -> None:
        send_json(self, status, doc)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    Stub.mode, Stub.requests = "plans", 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent():
    """A port that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def cosim(args: list[str], home: Path, cwd: Path | None = None, timeout: float = 300, **env):
    full = dict(os.environ, COSIM_HOME=str(home), OPENAI_API_KEY=SECRET, **env)
    return subprocess.run([sys.executable, "-m", "cosim", *args], capture_output=True, text=True,
                          env=full, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)  # fmt: skip


def error_line(p: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    lines = [x for x in p.stderr.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, p.stderr[-3000:]
    return lines[0]


def cached_answers(home: Path) -> int:
    db = home / "llm-cache.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("SELECT count(*) FROM full_llm_cache").fetchone()[0]


# ---------------------------------------------------------------------- --out
def test_out_that_holds_other_files_is_refused_before_any_work(kouvola, tmp_path):
    home, mine = tmp_path / "home", tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work\n")
    # the LLM is unreachable: were --out not checked first, the run would get that far
    args = ["demos", "--scenario", str(kouvola.path), "--llm", "openai:m", *SMALL]
    line = error_line(cosim(args + ["--out", str(mine)], home, OPENAI_BASE_URL=closed_url() + "/v1"))
    assert "not empty" in line and "thesis.tex" in line
    assert sorted(os.listdir(mine)) == ["thesis.tex"] and (mine / "thesis.tex").read_text() == "months of work\n"
    # `--out .` in a folder with files: refused, the folder keeps them
    line = error_line(cosim(args + ["--out", "."], home, cwd=mine, OPENAI_BASE_URL=closed_url() + "/v1"))
    assert "current folder" in line and sorted(os.listdir(mine)) == ["thesis.tex"]
    line = error_line(cosim(args + ["--out", str(mine / "thesis.tex")], home, OPENAI_BASE_URL=closed_url() + "/v1"))
    assert "not a folder" in line and (mine / "thesis.tex").read_text() == "months of work\n"
    assert cached_answers(home) == 0  # nothing was asked


def _small_sed(kouvola, route: int) -> SED:
    sed = SED(kouvola, SEDConfig(agents=4, rounds=1, rollouts=2, subset_size=2, max_concurrency=1),
              model=FakeListChatModel(responses=[]))  # fmt: skip
    sed.model = FakeListChatModel(responses=[answer(s, route) for s in sed.subsets])
    return sed


def test_an_earlier_output_is_replaced_whole_and_nothing_else_is_deleted(kouvola, tmp_path):
    out = tmp_path / "demos"
    for route in (0, 1):
        sed = _small_sed(kouvola, route)
        try:
            write_outputs(sed, sed.run(), out)
        finally:
            sed.close()
        plans = json.loads((out / "plans.json").read_text())
        assert {p["candidate"] for p in plans.values()} == {route}  # the second run replaced the first
    assert sorted(os.listdir(tmp_path)) == ["demos"]  # no temporary or set-aside folder left behind
    # a user's file inside an earlier output: the folder is no longer only ours, so it is not replaced
    (out / "notes.txt").write_text("mine\n")
    sed = _small_sed(kouvola, 0)
    try:
        with pytest.raises(LLMError, match="not empty"):
            write_outputs(sed, sed.run(), out)
    finally:
        sed.close()
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "demos.npz").is_file()
    assert sorted(os.listdir(tmp_path)) == ["demos"]


# ---------------------------------------------------------------------- unreachable backends
def test_a_closed_port_fails_fast_and_the_next_run_asks_the_working_endpoint(kouvola, tmp_path, stub):
    home, out = tmp_path / "home", tmp_path / "demos"
    args = ["demos", "--scenario", str(kouvola.path), "--llm", "openai:stub-model", *SMALL, "--out", str(out)]
    closed = closed_url() + "/v1"
    p = cosim(args, home, OPENAI_BASE_URL=closed)
    line = error_line(p)
    assert "'openai:stub-model'" in line and closed in line and "cannot connect" in line
    assert SECRET not in p.stdout + p.stderr
    assert not out.exists() and cached_answers(home) == 0  # no folder, no answer cached
    # the endpoint works again: real requests, LLM plans (route 1), nothing served from a cache
    p = cosim(args, home, OPENAI_BASE_URL=stub)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert Stub.requests == summary["llm_calls"] == summary["subsets"] >= 2
    assert summary["fallback_share"] == 0.0 and summary["repaired"] == 0
    assert {v["candidate"] for v in json.loads((out / "plans.json").read_text()).values()} == {1}
    assert "0% fallback" in p.stdout


def test_an_endpoint_that_never_answers_is_bounded_by_the_request_timeout(kouvola, tmp_path, silent):
    out = tmp_path / "demos"
    args = ["demos", "--scenario", str(kouvola.path), "--llm", "openai:m", *SMALL, "--request-timeout", "0.5",
            "--out", str(out)]  # fmt: skip
    p = cosim(args, tmp_path / "home", timeout=180, OPENAI_BASE_URL=silent + "/v1")
    line = error_line(p)
    assert "no answer within 0.5 s" in line and silent in line and not out.exists()
    # a progress line per try, so that a default 60-s timeout is not minutes of silence (issue 26, row 10)
    tries = [x for x in p.stderr.splitlines() if x.startswith("LLM 'openai:m' at ")]
    assert [x.split("(try ")[1].split(",")[0] for x in tries] == ["1/4", "2/4", "3/4", "4/4"], p.stderr[-3000:]
    assert all("no answer within 0.5 s" in x and "s waited" in x for x in tries)
    assert tries[-1].endswith("giving up") and all(x.endswith("retrying") for x in tries[:-1])


def test_a_key_echoed_by_the_server_is_stored_nowhere(kouvola, tmp_path, stub):
    """Every text from a server passes the one redactor before it is logged or stored (issue 26, row 11)."""
    Stub.mode = "500-echo"
    out = tmp_path / "demos"
    args = ["demos", "--scenario", str(kouvola.path), "--llm", "openai:m", *SMALL, "--out", str(out)]
    p = cosim(args, tmp_path / "home", OPENAI_BASE_URL=stub)
    assert "not expert demonstrations" in error_line(p) and Stub.requests >= 2
    log = (out / "llm_log.jsonl").read_text()
    assert "internal error while serving key ***" in log  # the server's message is kept, masked
    stored = [f for f in [*out.rglob("*"), *(tmp_path / "home").rglob("*")] if f.is_file()]
    assert stored and not [f for f in stored if SECRET.encode() in f.read_bytes()]
    assert SECRET not in p.stdout + p.stderr


def test_ollama_with_nothing_listening_fails_fast(kouvola, tmp_path):
    out = tmp_path / "demos"
    url = closed_url()
    args = ["demos", "--scenario", str(kouvola.path), "--llm", "ollama:m", *SMALL, "--out", str(out)]
    line = error_line(cosim(args, tmp_path / "home", OLLAMA_HOST=url))
    assert "'ollama:m'" in line and url in line and "cannot connect" in line and not out.exists()


def test_a_refused_key_fails_at_the_first_answer(kouvola, tmp_path, stub):
    Stub.mode = "401"
    args = ["demos", "--scenario", str(kouvola.path), "--llm", "openai:m", *SMALL, "--out", str(tmp_path / "d")]
    p = cosim(args, tmp_path / "home", OPENAI_BASE_URL=stub)
    assert "HTTP 401" in error_line(p) and Stub.requests == 1 and SECRET not in p.stderr


# ---------------------------------------------------------------------- mostly-fallback demonstrations
def test_mostly_fallback_demos_are_flagged_and_never_cached(kouvola, tmp_path, stub, monkeypatch):
    """The on-demand provider (`cosim train/compare --methods reled`): an endpoint whose answers are no
    plans gives no cache entry, neither demonstrations nor answers; once it answers plans, the next call
    asks it and caches real LLM demonstrations."""
    from evaluation.demos_provider import demos_root, provide_demos

    home = tmp_path / "home"
    monkeypatch.setenv("COSIM_HOME", str(home))
    from core.settings import nest, update
    from evaluation.config import ExperimentConfig

    tree = update(ExperimentConfig(), nest({"scenario.name": str(kouvola.path), "env.n_agents": 4,
                                            "sed.llm": "openai:stub-model", "sed.rounds": 1}))  # fmt: skip
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", stub)
    Stub.mode = "prose"
    with pytest.raises(LLMError, match="fallbacks.*not cached"):
        provide_demos(tree)
    prose_requests = Stub.requests
    assert prose_requests >= 2  # each subset asked, and re-asked with the reasons
    assert list(demos_root().iterdir()) == [] and cached_answers(home) == 0
    rejected = json.loads(next((home / "demos-rejected").glob("*/summary.json")).read_text())
    assert rejected["fallback_share"] == 1.0

    Stub.mode = "plans"
    folder = provide_demos(tree)
    assert Stub.requests > prose_requests  # asked again, not served the prose from the cache
    summary = json.loads((folder / "summary.json").read_text())
    assert folder.parent == demos_root() and summary["fallback_share"] == 0.0
    assert {v["candidate"] for v in json.loads((folder / "plans.json").read_text()).values()} == {1}
    # a cosim demos run against the same failing answers writes its folder, for diagnosis, and says why
    Stub.mode = "prose"
    out = tmp_path / "demos"
    args = ["demos", "--scenario", str(kouvola.path), "--llm", "openai:other", *SMALL, "--out", str(out)]
    line = error_line(cosim(args, home, OPENAI_BASE_URL=stub))
    assert "100% of the kept plans" in line and "not expert demonstrations" in line
    assert json.loads((out / "summary.json").read_text())["fallback_share"] == 1.0
