"""Stationarity-Aware Expert Demonstrations (SED): LLM route plans, checked against a per-agent bound.

This project's formalisation (the paper's abstract gives no formulas):

* Each round, the LLM proposes one candidate route per agent, one prompt per interaction subset.
* The plan set is executed in SUMO over R background-traffic seeds. Per agent i:
  ``V_i`` = std of i's travel time (minutes) over the R rollouts — the *external reward volatility* the
  plan exposes the agent to; ``D_i`` = mean total-variation distance between this round's and the
  previous round's route choices of the agents in i's subset — the *intra-subset policy divergence*
  (round 1 is compared with everyone on the free-flow route). ``B_i = V_i + c·D_i``.
* The plan set is accepted when every answer was valid and ``max_i B_i <= threshold``; otherwise the
  next round asks again only the subsets that need it (an agent over the threshold, or an invalid
  answer), with feedback on their agents with the highest ``B_i`` (their travel time, the streets where
  they lost time); the other subsets keep their plans (``rounds.json`` lists both), for up to M rounds.
  The best plan set seen (lowest mean travel time) is kept either way.
* The kept plans, executed once more, give per-agent demonstrations ``(o, a, r)`` in exactly the env's
  observation and action format, plus the expert trajectories (positions) for RELED's DTW weights.

Cost at scale: remote backends get a round's prompts concurrently (LangChain's ``batch`` with
``sed.max_concurrency``); the local model answers one prompt at a time, reusing the prompt prefix it
shares with the previous call (`llm.backends`); the R rollouts of a plan set run on parallel worker
processes when more than one core is free (``sed.rollout_workers``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from langchain_community.cache import SQLiteCache
from langchain_core.exceptions import OutputParserException
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableLambda

from core.jsonio import clean_dict
from core.secrets import redact
from cosim import demos as demofiles
from cosim.env import EnvConfig, VehicleRoutingEnv
from cosim.policies import plan_actions
from llm.backends import backend_url, make_chat_model
from llm.config import SEDSettings
from llm.errors import LLMError
from llm.plans import PARSER, Validation, parse, plan_schema, validate
from llm.prompting import PROMPT, CandidateFinder, Route, interaction_subsets, subset_data
from llm.rollouts import POOL_WORTH_S, PlanRollouts, execute_plans
from scenarios import Scenario


@dataclass
class SEDConfig(SEDSettings):
    """What one SED run needs: the tree's ``sed`` settings, the number of agents and the seed, and the
    answer cache's file resolved (None: no cache)."""

    agents: int | None = 50
    seed: int = 0
    cache_path: str | None = None  # LangChain SQLite cache; None = no cache

    @classmethod
    def from_settings(cls, settings: SEDSettings, agents: int | None, seed: int) -> SEDConfig:
        from dataclasses import fields as _fields

        path = settings.cache_location()
        own = {f.name: getattr(settings, f.name) for f in _fields(SEDSettings)}
        return cls(**own, agents=agents, seed=seed, cache_path=path)


# Demonstrations whose plans are mostly free-flow fallbacks (the LLM's answers were unusable) are not
# expert demonstrations: `cosim demos` says so with an error, the on-demand provider never caches them.
MAX_FALLBACK_SHARE = 0.5


class CountingCache(SQLiteCache):
    """LangChain's SQLite cache that counts hits, so a re-run can show it made no new calls, and that
    can forget an answer: an answer that could not be used must be asked again next run, not be served
    from the cache as the same fallback forever. Lookups may come from several threads at once (a
    concurrent batch), so each is remembered by its prompt."""

    def __init__(self, database_path: str):
        super().__init__(database_path=database_path)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[str, bool]] = {}  # prompt key -> (llm_string, was it a hit)

    def lookup(self, prompt, llm_string):
        hit = super().lookup(prompt, llm_string)
        with self._lock:
            self._seen[prompt] = (llm_string, hit is not None)
            if hit is None:
                self.misses += 1
            else:
                self.hits += 1
        return hit

    @staticmethod
    def key(messages) -> str:
        """The prompt key LangChain's chat models look answers up by (message ids left out)."""
        return dumps([m.model_copy(update={"id": None}) if getattr(m, "id", None) is not None else m for m in messages])

    def was_hit(self, messages) -> bool:
        with self._lock:
            return self._seen.get(self.key(messages), ("", False))[1]

    def forget(self, messages) -> None:
        from sqlalchemy import delete
        from sqlalchemy.orm import Session

        prompt = self.key(messages)
        with self._lock:
            seen = self._seen.pop(prompt, None)
        if seen is None:
            return
        table = self.cache_schema
        with Session(self.engine) as session, session.begin():
            session.execute(delete(table).where(table.prompt == prompt, table.llm == seen[0]))


def _transient_errors() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [TimeoutError, ConnectionError]
    try:
        import openai

        kinds += [openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError]
    except ImportError:  # pragma: no cover
        pass
    try:
        import httpx

        kinds += [httpx.TimeoutException, httpx.ConnectError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(kinds)


def _timeout_errors() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [TimeoutError]
    try:
        import httpx
        import openai

        kinds += [openai.APITimeoutError, httpx.TimeoutException]
    except ImportError:  # pragma: no cover
        pass
    return tuple(kinds)


def _backend_gone(exc: BaseException, cfg: SEDConfig) -> str | None:
    """Why no call to this backend can succeed (cannot connect, no answer within the timeout, key or
    model refused), or None for a failure of this one call. Such a run must stop: carrying on would
    replace every plan by the free-flow fallback and look like success."""
    import httpx

    try:
        from openai import APIConnectionError, APITimeoutError
    except ImportError:  # pragma: no cover
        APIConnectionError = APITimeoutError = ConnectionError  # noqa: N806
    attempts = f"{cfg.retry_attempts} attempts"
    if isinstance(exc, (TimeoutError, httpx.TimeoutException, APITimeoutError)):
        return f"no answer within {cfg.request_timeout:g} s ({attempts})"
    if isinstance(exc, (ConnectionError, httpx.TransportError, APIConnectionError)):
        return f"cannot connect ({attempts}: {type(exc).__name__})"
    status = getattr(exc, "status_code", None)
    if status in (401, 403, 404):
        return f"HTTP {status} {type(exc).__name__}: the key, the model name or the URL is not accepted"
    return None


@dataclass
class RoundLog:
    round: int
    bound: dict[str, float]
    volatility: dict[str, float]
    divergence: dict[str, float]
    mean_travel_time: float
    travel_time: dict[str, float]
    valid_subsets: int
    invalid_answers: int
    repaired: int
    accepted: bool
    llm_calls: int  # requests the model answered or failed, retries included (cache hits are not calls)
    llm_seconds: float
    completion_tokens: int
    prompts: int = 0  # prompts the model answered (a retried prompt counts once)
    prompt_tokens: int = 0
    prompt_eval_tokens: int = 0  # prompt tokens the local model evaluated (the rest came from its cache)
    agents_asked: int = 0  # agent decisions asked for, re-asks included
    asked_subsets: list[int] = field(default_factory=list)  # indices into summary.json's "subset_members"
    kept_subsets: list[int] = field(default_factory=list)  # kept their previous round's plans, not asked
    rollout_seconds: float = 0.0


@dataclass
class SEDResult:
    plans: dict[str, list[str]]  # the kept plan set: agent -> edge ids
    choices: dict[str, int]
    rounds: list[RoundLog]
    accepted_round: int | None
    best_round: int
    first_plans: dict[str, list[str]] = field(default_factory=dict)  # round 1, unvalidated (LEED's)
    first_choices: dict[str, int] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    fallback_share: float = 0.0  # share of the kept plans that are free-flow fallbacks, not the LLM's
    first_round_fallback_share: float = 0.0

    def fallback_problem(self) -> str | None:
        """Why these are not expert demonstrations (mostly fallback plans), or None."""
        if max(self.fallback_share, self.first_round_fallback_share) <= MAX_FALLBACK_SHARE:
            return None
        return (
            f"{self.fallback_share:.0%} of the kept plans (round 1: {self.first_round_fallback_share:.0%}) are "
            "free-flow fallbacks, not LLM plans, so these are not expert demonstrations (the reasons are in "
            "llm_log.jsonl)"
        )


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


def compute_bounds(
    travel_times: dict[str, list[float]],
    choices: dict[str, int],
    previous: dict[str, int],
    subsets: list[list[str]],
    k: int,
    c: float,
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(B, V, D) per agent. travel_times: seconds per rollout; choices: candidate index (-1 = own
    route) now and in the previous round. Deterministic plans are one-hot choice distributions."""

    def onehot(i: int) -> np.ndarray:
        v = np.zeros(k + 1)
        v[i if i >= 0 else k] = 1.0
        return v

    vol = {a: float(np.std(np.asarray(t) / 60.0)) for a, t in travel_times.items()}
    tv = {a: total_variation(onehot(choices[a]), onehot(previous.get(a, 0))) for a in choices}
    div = {}
    for s in subsets:
        d = float(np.mean([tv[a] for a in s]))
        for a in s:
            div[a] = d
    bound = {a: vol[a] + c * div[a] for a in choices}
    return bound, vol, div


@dataclass
class _Ask:
    """One prompt to send: a subset, its feedback, and the reasons its previous answer was refused."""

    agents: list[str]
    feedback: str = ""
    error_note: str | None = None


class SED:
    """One SED run on a scenario: rounds of prompting, rollouts and bounds, then the demonstrations."""

    def __init__(self, scenario: Scenario, config: SEDConfig, model=None, out: Path | None = None,
                 env: EnvConfig | None = None):  # fmt: skip
        """`env`: the experiment's env settings (observation, reward, …), so that the demonstrations are
        in the exact format the learners will see; its agent count is `config.agents`."""
        self.sc = scenario
        self.cfg = config
        self.out = out
        if model is None:
            model, grammar = make_chat_model(
                config.llm,
                seed=config.seed,
                temperature=config.temperature,
                timeout=config.request_timeout,
                threads=config.threads,
            )
            if grammar:
                model.reuse_prefix = config.prefix_cache
        else:
            grammar = False
        self.model, self.grammar = model, grammar
        env = (
            replace(env, n_agents=config.agents, control="policy")
            if env is not None
            else EnvConfig(n_agents=config.agents)
        )
        self.env_config = env
        self.env = VehicleRoutingEnv(scenario, env)
        self.graph = self.env.graph
        self.trips = {t.id: (t.origin, t.destination) for t in self.env.trips}
        self.departs = {t.id: t.depart for t in self.env.trips}
        finder = CandidateFinder(self.graph, k=config.k)
        self.candidates: dict[str, list[Route]] = {t.id: finder.routes(t.origin, t.destination) for t in self.env.trips}
        self.subsets = interaction_subsets(self.candidates, config.subset_size)
        self.cache: CountingCache | None = None
        self.log: list[dict] = []  # one record per LLM call: prompt, response, problems, latency
        # lines the user must see whatever the progress display (retries of a silent server); secrets masked
        self.notice = lambda msg: print(msg, file=sys.stderr, flush=True)
        self._backend_answered = False  # a remote backend's prompts go out concurrently once it answered
        self._pool = None  # rollout workers, started once a rollout here has taken POOL_WORTH_S
        self._lock = threading.Lock()
        self._attempts = 0  # requests to the model, retries and cache hits included
        self._hits = 0  # prompts answered from the cache
        self._prompts = 0  # prompts the model answered (a retried prompt counts once)
        self._llm_seconds = 0.0
        self._tokens = 0
        self._prompt_tokens = 0
        self._prompt_eval_tokens = 0
        self._agents_asked = 0
        self._rollout_seconds = 0.0

    # ------------------------------------------------------------------ LLM
    @property
    def concurrency(self) -> int:
        """Prompts in flight at once: the local model computes one at a time on this machine's cores."""
        return 1 if self.grammar else max(1, self.cfg.max_concurrency)

    def _messages(self, ask: _Ask) -> list:
        messages = PROMPT.format_messages(
            data=subset_data(ask.agents, self.candidates, self.departs),
            feedback=ask.feedback,
            format_instructions="" if self.grammar else PARSER.get_format_instructions() + "\n\n",
            agent_ids=", ".join(ask.agents),
        )
        if ask.error_note:
            messages.append(HumanMessage(content=ask.error_note))
        return messages

    def _runnable(self, ask: _Ask):
        """The model for one prompt (bound to its answer grammar), counting every request it makes and
        retrying timeouts, lost connections and rate limits with backoff."""
        k = max(len(self.candidates[a]) for a in ask.agents)
        model = self.model.bind(json_schema=plan_schema(len(ask.agents), k)) if self.grammar else self.model

        tries, t_first = [0], time.perf_counter()

        def attempt(messages):
            with self._lock:
                self._attempts += 1
            tries[0] += 1
            try:
                return model.invoke(messages)
            except _transient_errors() as exc:
                self._say_retry(exc, tries[0], time.perf_counter() - t_first)
                raise

        return RunnableLambda(attempt).with_retry(
            retry_if_exception_type=_transient_errors(),
            stop_after_attempt=self.cfg.retry_attempts,
            exponential_jitter_params={"multiplier": self.cfg.retry_initial_wait},
        )

    def _say_retry(self, exc: BaseException, k: int, waited: float) -> None:
        """One progress line per failed try of a call, so a silent server is not minutes of silence."""
        n = self.cfg.retry_attempts
        url = backend_url(self.cfg.llm)
        what = (f"no answer within {self.cfg.request_timeout:g} s"
                if isinstance(exc, _timeout_errors()) else f"{type(exc).__name__}: {str(exc)[:120]}")  # fmt: skip
        then = "retrying" if k < n else "giving up"
        self.notice(redact(f"LLM {self.cfg.llm!r}{f' at {url}' if url else ''}: {what} (try {k}/{n}, "
                           f"{waited:.0f} s waited); {then}"))  # fmt: skip

    def _ask_many(self, asks: list[_Ask], rnd: int) -> list[Validation]:
        """Send the prompts (concurrently up to `concurrency`, through LangChain's batch) and validate
        every answer against its own subset. A dead backend raises LLMError; any other failure is that
        subset's invalid answer."""
        prompts = [self._messages(a) for a in asks]

        def call(i: int):
            t0 = time.perf_counter()
            try:
                reply = self._runnable(asks[i]).invoke(prompts[i])
            except Exception as exc:  # noqa: BLE001 - judged below, in order
                reply = exc
            return reply, time.perf_counter() - t0

        t0 = time.perf_counter()
        replies = []
        # one at a time (the local model), and a remote run's prompts until the backend has answered once:
        # a dead backend, a refused key or a wrong URL then ends the run after one prompt's attempts
        while len(replies) < len(asks) and (self.concurrency == 1 or not self._backend_answered):
            replies.append(call(len(replies)))
            self._judge_gone(replies[-1][0])
            self._backend_answered = not isinstance(replies[-1][0], Exception)
        rest = list(range(len(replies), len(asks)))
        if rest:
            replies += RunnableLambda(call).batch(rest, config={"max_concurrency": self.concurrency})
        self._llm_seconds += time.perf_counter() - t0
        return [self._judge(ask, msgs, reply, dt, rnd) for ask, msgs, (reply, dt) in zip(asks, prompts, replies)]

    def _judge_gone(self, reply) -> None:
        """Raise LLMError when a failed call shows that no call to this backend can succeed."""
        why = _backend_gone(reply, self.cfg) if isinstance(reply, Exception) else None
        if why:
            url = backend_url(self.cfg.llm)
            where = f" at {url}" if url else ""
            raise LLMError(f"the LLM backend {self.cfg.llm!r}{where} is unusable: {why}") from None

    def _judge(self, ask: _Ask, messages: list, reply, dt: float, rnd: int) -> Validation:
        agents = ask.agents
        text, error = "", None
        cached = self.cache is not None and self.cache.was_hit(messages)
        usage: dict = {}
        if isinstance(reply, Exception):
            self._judge_gone(reply)
            if isinstance(reply, _transient_errors()):
                error = f"LLM call failed after {self.cfg.retry_attempts} attempts: {type(reply).__name__}: {reply}"
            else:
                error = f"LLM call failed: {type(reply).__name__}: {str(reply)[:200]}"
            error = redact(error)  # a server's error message may echo the key it was sent
        else:
            text = reply.content if isinstance(reply, AIMessage) else str(reply)
            if not isinstance(text, str):
                text = json.dumps(text)
            usage = dict(getattr(reply, "usage_metadata", None) or {})
            usage["prompt_eval_tokens"] = (getattr(reply, "response_metadata", None) or {}).get("prompt_eval_tokens")
        if cached:
            self._hits += 1  # its one attempt was answered by the cache, not by the model
        else:
            self._prompts += 1
            self._agents_asked += len(agents)
            self._tokens += int(usage.get("output_tokens", 0) or 0)
            self._prompt_tokens += int(usage.get("input_tokens", 0) or 0)
            p_eval = usage.get("prompt_eval_tokens")
            self._prompt_eval_tokens += int(p_eval if p_eval is not None else usage.get("input_tokens", 0) or 0)
        plan = None
        if error is None:
            try:
                plan = parse(text)
            except OutputParserException as exc:
                error = str(exc).splitlines()[0][:300]
        cand_edges = {a: [r.edges for r in self.candidates[a]] for a in agents}
        v = validate(plan, cand_edges, self.graph, self.trips, error)
        if not v.valid and self.cache is not None:
            self.cache.forget(messages)  # ask again next run instead of serving the same fallback
        self.log.append(
            redact(
                {  # a server's text may echo a secret (an API key in an error message)
                    "round": rnd,
                    "agents": agents,
                    "prompt": [{"role": m.type, "content": m.content} for m in messages],
                    "response": text,
                    "problems": v.problems,
                    "repaired": v.repaired,
                    "seconds": round(dt, 3),
                    "cached": cached,
                    "prompt_tokens": usage.get("input_tokens"),
                    "prompt_eval_tokens": usage.get("prompt_eval_tokens"),
                    "completion_tokens": usage.get("output_tokens"),
                }
            )
        )
        return v

    def _ask(self, agents: list[str], feedback: str, error_note: str | None, rnd: int) -> Validation:
        return self._ask_many([_Ask(agents, feedback, error_note)], rnd)[0]

    def _plan_subsets(self, asks: list[_Ask], rnd: int) -> list[tuple[Validation, int]]:
        """Ask every prompt; re-ask, together, those whose answer was invalid, with the reasons (at most
        `reasks` times). Returns (validation, invalid answers) per ask."""
        results = [(v, 0 if v.valid else 1) for v in self._ask_many(asks, rnd)]
        for _ in range(self.cfg.reasks):
            redo = [i for i, (v, _) in enumerate(results) if not v.valid]
            if not redo:
                break
            again = [
                replace(
                    asks[i],
                    error_note="Your previous answer could not be used: "
                    + "; ".join(results[i][0].problems[:5])
                    + ". Answer again with one valid route number per agent, JSON only.",
                )
                for i in redo
            ]
            for i, v in zip(redo, self._ask_many(again, rnd)):
                results[i] = (v, results[i][1] + (0 if v.valid else 1))
        return results

    def _plan_subset(self, agents: list[str], feedback: str, rnd: int) -> tuple[Validation, int]:
        """Ask about one subset (re-asking when invalid); returns (validation, invalid count)."""
        return self._plan_subsets([_Ask(agents, feedback)], rnd)[0]

    # ------------------------------------------------------------------ SUMO
    def record(self, plans: dict[str, list[str]], seed: int) -> tuple[demofiles.Demonstrations, dict]:
        """Execute a plan set once, here, recording the demonstrations in the env's format (and the
        episode's metrics). Rollouts that only measure go through `rollouts`."""
        demos, _, metrics = demofiles.record(self.env, lambda env, obs: plan_actions(env, obs, plans), seed)
        return demos, metrics

    def _workers(self) -> int:
        """Rollout worker processes for R rollouts: none (all here) on one core or when asked for one."""
        from core.procs import free_cores

        n = self.cfg.rollout_workers or free_cores()
        return min(n, self.cfg.rollouts) if n > 1 else 0

    def rollouts(self, plans: dict[str, list[str]], seeds: list[int]) -> list[tuple[dict, dict]]:
        """Execute a plan set once per seed: (travel times, edge traces) per seed, in seed order. On the
        rollout workers when there can be more than one and a rollout here has shown they pay for their
        start-up (`POOL_WORTH_S`); the results are the same wherever a rollout runs. A rollout whose
        worker failed counts as nobody arriving (the horizon for everyone), as a crash here would."""
        t0 = time.perf_counter()
        out, seeds = [], list(seeds)
        while seeds and self._pool is None:
            t1 = time.perf_counter()
            out.append(execute_plans(self.env, plans, seeds.pop(0)))
            if self._workers() and time.perf_counter() - t1 >= POOL_WORTH_S:
                from core.procs import WorkerPool

                self._pool = WorkerPool(self.env_config, self.sc.path, None, self._workers(), worker_cls=PlanRollouts)
        if seeds:
            from core.procs import Job

            for i in range(0, len(seeds), self._pool.n):
                jobs = [Job(episode=0, seed=s, train=False) for s in seeds[i : i + self._pool.n]]
                for row, _ in self._pool.run(jobs, plans):
                    out.append((row.get("travel", {}), row.get("traces", {})))
        self._rollout_seconds += time.perf_counter() - t0
        return out

    def _delays(self, trace: list[tuple[float, str]]) -> list[tuple[str, float]]:
        """Streets where an agent lost the most time against free flow, from its edge trace."""
        g = self.graph
        trace = [(t, g.index[e]) for t, e in trace]
        lost: dict[str, float] = {}
        for (t1, e1), (t2, e2) in zip(trace, trace[1:]):
            path = g.path(e1, e2)
            if not path:
                continue
            extra = (t2 - t1) - float(g.fftime[path[:-1]].sum())
            if extra > 5:
                name = g.names[e1] or g.edges[e1]
                lost[name] = lost.get(name, 0.0) + extra
        return sorted(lost.items(), key=lambda kv: -kv[1])[:2]

    # ------------------------------------------------------------------ loop
    def run(self, progress=lambda msg: None) -> SEDResult:
        cfg = self.cfg
        previous_cache = get_llm_cache()
        if cfg.cache_path:
            Path(cfg.cache_path).parent.mkdir(parents=True, exist_ok=True)
            self.cache = CountingCache(cfg.cache_path)
            set_llm_cache(self.cache)
        try:
            return self._run(progress)
        finally:
            set_llm_cache(previous_cache)

    def _run(self, progress) -> SEDResult:
        cfg = self.cfg
        agents = list(self.candidates)
        previous = {a: 0 for a in agents}  # round 0: everyone on the free-flow route
        feedback = {a: "" for a in agents}
        rounds: list[RoundLog] = []
        best: tuple[float, dict, dict, int] | None = None
        accepted_round = None
        plans: dict[str, list[str]] = {}
        choices: dict[str, int] = {}
        valid = [False] * len(self.subsets)
        repaired_in = [0] * len(self.subsets)
        ask = list(range(len(self.subsets)))  # round 1: every subset
        for rnd in range(1, cfg.rounds + 1):
            counters0 = self._counters()
            progress(f"round {rnd}/{cfg.rounds}: asking the LLM about {len(ask)} of {len(self.subsets)} subsets")
            asks = []
            for i in ask:
                fb = "".join(feedback[a] for a in self.subsets[i])
                fb = (
                    f"Feedback from the previous round (measured in simulation; consider other routes):\n{fb}\n"
                    if fb
                    else ""
                )
                asks.append(_Ask(self.subsets[i], fb))
            invalid = 0
            for i, (v, n_invalid) in zip(ask, self._plan_subsets(asks, rnd)):
                invalid += n_invalid
                repaired_in[i] = len(v.repaired)
                valid[i] = v.valid
                plans.update(v.routes)
                choices.update(v.choice)
            progress(f"round {rnd}/{cfg.rounds}: executing the plans over {cfg.rollouts} traffic seeds")
            results = self.rollouts(plans, [cfg.seed * 1000 + j for j in range(cfg.rollouts)])
            times = {a: [travel.get(a, self.env.horizon) for travel, _ in results] for a in agents}
            last_traces = results[-1][1]
            bound, vol, div = compute_bounds(times, choices, previous, self.subsets, cfg.k, cfg.c)
            mean_tt = {a: float(np.mean(t)) for a, t in times.items()}
            all_valid = all(valid)
            accepted = all_valid and max(bound.values()) <= cfg.threshold
            asked = set(ask)
            rounds.append(
                RoundLog(
                    round=rnd,
                    bound=bound,
                    volatility=vol,
                    divergence=div,
                    mean_travel_time=float(np.mean(list(mean_tt.values()))),
                    travel_time=mean_tt,
                    valid_subsets=sum(valid),
                    invalid_answers=invalid,
                    repaired=sum(repaired_in),
                    accepted=accepted,
                    asked_subsets=sorted(asked),
                    kept_subsets=[i for i in range(len(self.subsets)) if i not in asked],
                    **self._counters(since=counters0),
                )
            )
            if rnd == 1:
                first = (dict(plans), dict(choices))
            score = rounds[-1].mean_travel_time
            if best is None or score < best[0]:
                best = (score, dict(plans), dict(choices), rnd)
            if accepted:
                accepted_round = rnd
                break
            # the next round asks only the subsets that need it: an invalid answer, or an agent over the
            # threshold; its feedback names the agents with the highest bound in each of those
            ask = [i for i, s in enumerate(self.subsets) if not valid[i] or max(bound[a] for a in s) > cfg.threshold]
            feedback = {a: "" for a in agents}
            for i in ask:
                subset = self.subsets[i]
                worst = sorted(subset, key=lambda a: -bound[a])[: max(1, len(subset) // 2)]
                for a in worst:
                    ff = self.candidates[a][max(choices[a], 0)].seconds
                    lost = ", ".join(f"{n} +{s:.0f} s" for n, s in self._delays(last_traces.get(a, []))) or "none"
                    feedback[a] = (
                        f"- {a}: route {choices[a]} took {mean_tt[a]:.0f} s (free flow {ff:.0f} s, "
                        f"±{vol[a] * 60:.0f} s over runs); lost time on {lost}\n"
                    )
            previous = dict(choices)
        assert best is not None
        return SEDResult(
            plans=best[1],
            choices=best[2],
            rounds=rounds,
            accepted_round=accepted_round,
            best_round=best[3],
            first_plans=first[0],
            first_choices=first[1],
            fallback_share=rounds[best[3] - 1].repaired / len(agents),
            first_round_fallback_share=rounds[0].repaired / len(agents),
        )

    def _counters(self, since: dict | None = None) -> dict:
        """The cost counters of a round (the difference to `since`), named as in RoundLog."""
        now = {
            "llm_calls": self._attempts - self._hits,
            "prompts": self._prompts,
            "llm_seconds": self._llm_seconds,
            "completion_tokens": self._tokens,
            "prompt_tokens": self._prompt_tokens,
            "prompt_eval_tokens": self._prompt_eval_tokens,
            "agents_asked": self._agents_asked,
            "rollout_seconds": self._rollout_seconds,
        }
        if since is None:
            return now
        out = {k: v - since[k] for k, v in now.items()}
        out["llm_seconds"] = round(out["llm_seconds"], 3)
        out["rollout_seconds"] = round(out["rollout_seconds"], 3)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self.env.close()


def cost_summary(rounds: list[RoundLog]) -> dict:
    """What the rounds cost: tokens, LLM and rollout seconds, and the LLM seconds per agent decision
    asked for (each prompt counts its subset's agents; re-asks count again; cache hits count nothing)."""
    asked = sum(r.agents_asked for r in rounds)
    llm_s = sum(r.llm_seconds for r in rounds)
    return {
        "prompts": sum(r.prompts for r in rounds),
        "prompt_tokens": sum(r.prompt_tokens for r in rounds),
        "prompt_eval_tokens": sum(r.prompt_eval_tokens for r in rounds),
        "completion_tokens": sum(r.completion_tokens for r in rounds),
        "agents_asked": asked,
        "seconds_per_agent_round": round(llm_s / asked, 4) if asked else None,
        "rollout_seconds": round(sum(r.rollout_seconds for r in rounds), 3),
    }


def random_choice_baseline(sed: SED, rng: np.random.Generator) -> float:
    """Mean travel time when every agent takes a uniformly random candidate route (SED's yardstick)."""
    plans = {a: sed.candidates[a][int(rng.integers(len(sed.candidates[a])))].edges for a in sed.candidates}
    results = sed.rollouts(plans, [sed.cfg.seed * 1000 + j for j in range(sed.cfg.rollouts)])
    return float(np.mean([np.mean([travel.get(a, sed.env.horizon) for a in sed.candidates]) for travel, _ in results]))


def _write_demos(sed: SED, plans: dict, choices: dict, folder: Path) -> dict:
    """Execute a plan set once (seed = the SED seed) and store its demonstrations in the env's format
    (``cosim.demos``): what the expert did, not what the LLM said, is what the learners imitate."""
    demos, metrics = sed.record(plans, seed=sed.cfg.seed)
    demos.plans = {a: demofiles.Plan(plans[a], choices[a]) for a in plans}
    demofiles.write(folder, demos)
    return dict(metrics, samples=demos.n)


def check_out(out: Path) -> Path:
    """The absolute output folder, checked before any work (scenarios/outputs.py: new, empty or an
    earlier demonstrations folder, which is replaced whole): a bad --out must not cost an LLM and SUMO
    run first, and an output must not delete what it did not write."""
    from core.outputs import check_output

    return check_output(out, "cosim demos", demofiles.is_earlier_output, error=LLMError)


def move_into_place(new: Path, out: Path) -> None:
    """Rename the finished folder to out. An earlier output there is renamed aside first and deleted only
    once the new one is in place; anything that appeared at out meanwhile makes the rename fail instead
    of being deleted (rename never replaces a non-empty folder)."""
    old = None
    if out.is_dir() and demofiles.is_earlier_output(set(os.listdir(out))):
        old = out.parent / f".{out.name}-old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    try:
        os.rename(new, out)
    except OSError as exc:
        if old is not None:
            os.rename(old, out)
        raise LLMError(f"cannot put the demonstrations at {out}: {exc.strerror or exc}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def new_output(out: Path):
    """A temporary folder next to `out` for a demonstrations output: renamed into place when the block
    ends, removed if it fails, so an output is never half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield tmp
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_outputs(sed: SED, result: SEDResult, out: Path, extra: dict | None = None) -> dict:
    """Demonstrations, plans, prompts/responses, bounds and the summary, written into a temporary folder
    next to out and renamed into place (see check_out for what out may be)."""
    out = check_out(out)  # again: the folder may have changed during the run
    with new_output(out) as tmp:
        metrics = _write_demos(sed, result.plans, result.choices, tmp)
        # round 1's plans, unvalidated: the one-shot demonstrations of LEED and the no-SED ablation
        _write_demos(sed, result.first_plans, result.first_choices, tmp / demofiles.FIRST_ROUND)
        (tmp / demofiles.LLM_LOG).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sed.log))
        (tmp / demofiles.ROUNDS_JSON).write_text(json.dumps([asdict(r) for r in result.rounds], indent=1))
        summary = {
            "scenario": sed.sc.name,
            "llm": sed.cfg.llm,
            "agents": len(sed.candidates),
            "subsets": len(sed.subsets),
            "rounds": len(result.rounds),
            "accepted_round": result.accepted_round,
            "best_round": result.best_round,
            "bound_per_round": [round(max(r.bound.values()), 4) for r in result.rounds],
            "mean_bound_per_round": [round(float(np.mean(list(r.bound.values()))), 4) for r in result.rounds],
            "mean_travel_time_per_round": [round(r.mean_travel_time, 2) for r in result.rounds],
            "invalid_answers": sum(r.invalid_answers for r in result.rounds),
            "repaired": sum(r.repaired for r in result.rounds),
            "fallback_share": round(result.fallback_share, 4),
            "first_round_fallback_share": round(result.first_round_fallback_share, 4),
            "llm_calls": sum(r.llm_calls for r in result.rounds),
            "llm_seconds": round(sum(r.llm_seconds for r in result.rounds), 3),
            **cost_summary(result.rounds),
            "cache_hits": sed.cache.hits if sed.cache else 0,
            "subset_members": sed.subsets,
            "demo_samples": metrics["samples"],
            "demo_mean_travel_time": metrics["mean_travel_time"],
            "config": asdict(sed.cfg),
            **(extra or {}),
        }
        summary = clean_dict(summary)
        (tmp / demofiles.SUMMARY_JSON).write_text(json.dumps(summary, indent=1))
    return summary
