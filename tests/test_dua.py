"""The `dua` baseline (issue 28): SUMO's duaIterate.py over the agents' trips, the background as it runs
in the env, cached, and replayed through the env."""

from __future__ import annotations

import dataclasses

import pytest

from agents.baselines import DuaMethod
from agents.config import TrainConfig
from agents.dua import equilibrium
from agents.episode import make_env, run_episode


def test_dua_converges_keeps_the_background_and_its_routes_replay(busy_grid, tmp_path):
    sc = busy_grid
    trips = sc.trips()
    eq = equilibrium(sc, trips, sc.begin, sc.begin + sc.horizon, iterations=8, seed=1)
    gaps = [r["relative_gap"] for r in eq.iterations]
    assert gaps[0] is None  # one route per agent: nothing to compare with yet
    known = [g for g in gaps if g is not None]
    assert len(known) == 7 and known[-1] < known[0]  # agents settle on their cheaper routes
    assert all(r["arrived"] == len(trips) for r in eq.iterations)
    # cached: the same call returns at once with the same routes
    again = equilibrium(sc, trips, sc.begin, sc.begin + sc.horizon, iterations=8, seed=1)
    assert again.routes == eq.routes and again.folder == eq.folder
    # replayed through the env, every agent drives its equilibrium route
    cfg = TrainConfig.of(method="dua", seed=0, scenario=str(sc.path))
    method = DuaMethod(8)
    env = make_env(sc, cfg, method.env_settings)
    try:
        method.setup(env)
        assert method.plans == equilibrium(sc, trips, sc.begin, sc.begin + sc.horizon, 8, seed=sc.seed).routes
        row = run_episode(env, method, seed=sc.seed, train=False)
        for a in env.possible_agents:
            seen, route = [e for _, e in env.trajectory(a)], method.plans[a]
            it = iter(route)
            assert all(e in it for e in seen), (a, seen, route)  # in order, never off the route
            assert seen[-1] == route[-1]
        # the background ran in every iteration as it runs in the env: the same vehicles finished
        assert row["arrival_rate"] == 1.0
        assert method.equilibrium.iterations[-1]["vehicles"] == row["all_vehicles_finished"]
    finally:
        env.close()


def test_dua_on_demand_that_cannot_be_routed_is_one_error(busy_grid, tmp_path):
    """An agent whose destination SUMO's router cannot reach (the env's own graph would refuse it first,
    so the trip is handed to the equilibrium directly)."""
    from agents.base import TrainError

    sc = busy_grid
    trips = sc.trips()
    broken = [dataclasses.replace(trips[0], destination="nowhere"), *trips[1:]]
    with pytest.raises(TrainError, match="dua: .*could not be routed"):
        equilibrium(sc, broken, sc.begin, sc.begin + sc.horizon, iterations=2, seed=1)
