"""Non-learning baselines, run by the same runner as the learners (same env, metrics and files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agents.base import Method, TrainError
from cosim.policies import plan_actions, plan_problem, random_actions, shortest_actions


class RandomMethod(Method):
    """A uniformly random valid action at every decision. Training episodes draw from a generator seeded
    by the run seed (checkpointed); evaluation episodes from a fresh one seeded by the evaluation seed,
    so evaluations do not depend on how many training episodes came before."""

    name = "random"

    def __init__(self, seed: int, eval_seed: int):
        super().__init__()
        self.rng = np.random.default_rng(seed)
        self.eval_seed = eval_seed
        self._rng = self.rng

    def begin_episode(self, env, train: bool) -> None:
        self._rng = self.rng if train else np.random.default_rng(self.eval_seed)

    def act(self, env, obs, train):
        return random_actions(env, obs, self._rng)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


class ShortestMethod(Method):
    """The free-flow shortest continuation at every decision (action 0)."""

    name = "shortest"

    def act(self, env, obs, train):
        return shortest_actions(env, obs)


class SumoReroutingMethod(Method):
    """SUMO's own travel-time rerouting device steers the agents; the env asks no decisions."""

    name = "sumo-rerouting"
    control = "sumo-rerouting"

    def act(self, env, obs, train):
        return {}


class ReplayMethod(Method):
    """Replay fixed route plans (agent id -> list of edge ids); off-plan agents take the free-flow
    choice. The LLM expert's accepted plans run through this."""

    name = "replay"

    def __init__(self, plans: dict[str, list[str]]):
        super().__init__()
        self.plans = plans

    def setup(self, env) -> None:
        problem = plan_problem(self.plans, env.graph, env.trips)
        if problem:
            raise TrainError(f"{self.name}: {problem}")

    def act(self, env, obs, train):
        return plan_actions(env, obs, self.plans)

    def describe(self) -> dict:
        return {"planned_agents": len(self.plans)}


def load_plans(path: str | Path) -> dict[str, list[str]]:
    """Read a plans file: JSON ``{"agent id": ["edge", ...], ...}`` or ``{"plans": {...}}``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise TrainError(f"plans file {p} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainError(f"plans file {p} is not readable JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("plans"), dict):
        data = data["plans"]
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(e, str) for e in v) for k, v in data.items()
    ):
        raise TrainError(f"plans file {p} must map agent ids to lists of edge ids")
    return data
