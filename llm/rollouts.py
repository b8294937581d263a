"""Executing an SED plan set in SUMO, here or in rollout worker processes.

Kept apart from `llm.sed` so that a worker process imports the env and SUMO only, not LangChain.
"""

from __future__ import annotations

import pickle

from cosim.env import VehicleRoutingEnv
from cosim.policies import plan_actions
from scenarios import Scenario

# Starting worker processes costs a few seconds (a Python, the env, a SUMO each): SED uses them only
# once one rollout in this process has taken at least this long.
POOL_WORTH_S = 5.0


def execute_plans(env: VehicleRoutingEnv, plans: dict[str, list[str]], seed: int):
    """Run one episode with every agent replaying its plan: (travel time in s per arrived agent, per
    agent the (time, edge id) pairs it was seen on)."""
    obs, _ = env.reset(seed=seed)
    travel: dict[str, float] = {}
    while env.agents:
        obs, _, _, _, infos = env.step(plan_actions(env, obs, plans))
        for a, i in infos.items():
            if "travel_time" in i:
                travel[a] = i["travel_time"]
    return travel, {a: env.trajectory(a) for a in env.possible_agents}


class PlanRollouts:
    """What a rollout worker process (`core.procs.WorkerPool`) holds for SED: its own env, its own
    SUMO. A job executes the plan set it is sent with the job's background-traffic seed."""

    def __init__(self, blob: bytes, index: int) -> None:
        env_cfg, scenario_path, _ = pickle.loads(blob)
        self.index = index
        self.env = VehicleRoutingEnv(Scenario.load(scenario_path), env_cfg)

    def run(self, job, plans: dict[str, list[str]]) -> tuple[dict, None]:
        travel, traces = execute_plans(self.env, plans, job.seed)
        return {"travel": travel, "traces": traces}, None

    def close(self) -> None:
        self.env.close()
