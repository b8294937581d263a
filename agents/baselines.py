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
    """The free-flow shortest path: action 0 at every decision, with free-flow candidates and routes, so
    the route SUMO starts the agent on never changes."""

    name = "shortest"
    env_settings = {"control": "policy", "continuation": "free_flow"}

    def act(self, env, obs, train):
        return shortest_actions(env, obs)


class NavigationMethod(ShortestMethod):
    """An uncoordinated navigation app: at departure and at every decision the live-fastest route
    (action 0 with live candidates and routes, `cosim.traffic`)."""

    name = "navigation"
    env_settings = {"control": "policy", "continuation": "live"}


class SumoReroutingMethod(Method):
    """SUMO's own travel-time rerouting device steers the agents; the env asks no decisions."""

    name = "sumo-rerouting"
    env_settings = {"control": "sumo-rerouting"}

    def act(self, env, obs, train):
        return {}


class ReplayMethod(Method):
    """Replay fixed route plans (agent id -> list of edge ids); off-plan agents take the free-flow
    choice. The LLM expert's accepted plans run through this."""

    name = "replay"
    # free-flow continuations, as when the plans were made: off-plan agents take the free-flow choice, and
    # replaying free-flow plans is exactly the `shortest` baseline
    env_settings = {"control": "policy", "continuation": "free_flow"}

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


class DuaMethod(ReplayMethod):
    """The agents' dynamic user equilibrium against the real background (`agents.dua`, SUMO's
    duaIterate.py), computed once per scenario and agent set and replayed: where human drivers who learn
    from day to day would settle."""

    name = "dua"
    env_settings = {"control": "policy", "continuation": "free_flow"}  # every agent follows its route

    def __init__(self, iterations: int):
        super().__init__({})
        self.iterations = iterations
        self.equilibrium = None

    def setup(self, env) -> None:
        from agents.dua import equilibrium

        eq = equilibrium(env.scenario, env.trips, env.begin, env.begin + env.horizon, self.iterations,
                         seed=env.scenario.seed)  # fmt: skip
        self.equilibrium, self.plans = eq, eq.routes
        super().setup(env)

    def describe(self) -> dict:
        eq = self.equilibrium
        if eq is None:
            return {"dua_iterations": self.iterations}
        last = eq.iterations[-1]
        return {"dua_iterations": self.iterations, "dua_relative_gap": last["relative_gap"],
                "dua_mean_travel_time": last["mean_travel_time"], "dua_folder": str(eq.folder)}  # fmt: skip


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
