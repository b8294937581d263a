"""The ``sed`` section of an experiment's configuration tree: how expert demonstrations are asked for
and validated (this project's formalisation of SED, see `llm.sed`). Light to import (no LangChain), so
the command line can show the defaults.

How many agents and which seed come from the tree's ``env.n_agents`` and ``run.seed``: one place each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.settings import limit_problems, limits


@dataclass
class SEDSettings:
    llm: str = "local"  # local | openai[:model] | ollama[:model] | provider:model
    k: int = field(default=3, metadata=limits(gt=0))  # candidate routes per agent
    subset_size: int = field(default=6, metadata=limits(gt=0))  # agents per prompt at most
    rounds: int = field(default=3, metadata=limits(gt=0))  # M: SED rounds at most
    rollouts: int = field(
        default=3, metadata=limits(gt=0)
    )  # R: background-traffic seeds per round (>= 2: the volatility term needs a spread)
    c: float = field(default=1.0, metadata=limits(ge=0))  # weight of the divergence term D_i in B_i = V_i + c*D_i
    threshold: float = 1.0  # accept when max_i B_i <= threshold (minutes)
    reasks: int = field(default=1, metadata=limits(ge=0))  # re-asks of a subset whose answer was invalid, per round
    temperature: float = field(default=0.2, metadata=limits(ge=0))
    threads: int | None = field(
        default=None, metadata=limits(gt=0)
    )  # local model: CPU threads for prompts and answers (None: half the cores, at most 4)
    prefix_cache: bool = True  # local model: start each call after the prompt prefix it shares with the last
    max_concurrency: int = field(
        default=8, metadata=limits(gt=0)
    )  # remote backends: prompts in flight at once (the local model: always one)
    rollout_workers: int = field(
        default=0, metadata=limits(ge=0)
    )  # processes for the R rollouts of a plan set (0: one per free core, at most R)
    retry_attempts: int = field(
        default=4, metadata=limits(gt=0)
    )  # per call, for timeouts, lost connections and rate limits
    retry_initial_wait: float = field(default=1.0, metadata=limits(ge=0))  # s, exponential backoff with jitter
    request_timeout: float = field(
        default=60.0, metadata=limits(gt=0)
    )  # s per call to a remote backend (a silent endpoint fails, not hangs)
    cache: bool = True  # LangChain's SQLite answer cache: a re-run makes no calls
    cache_file: str | None = None  # None: $COSIM_HOME/llm-cache.sqlite

    def cache_location(self) -> str | None:
        """Where LangChain's answer cache lives (None: no cache); read when a run starts, so it follows
        the COSIM_HOME of that moment."""
        if not self.cache:
            return None
        from core.paths import home_dir

        return self.cache_file or str(home_dir() / "llm-cache.sqlite")

    def problems(self) -> list[str]:
        out = limit_problems(self, prefix="sed.")
        if self.rollouts == 1:
            out.append("sed.rollouts must be at least 2 (the volatility term needs a spread)")
        return out
