"""How the background gets its routes (issue 28): no method's settings may change how it drives. SUMO
routes unrouted trips as they enter with its rerouting device's SUMO-wide settings; a scenario built
with `background_routing = "fixed"` records those routes once and replays them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from cosim.config import EnvConfig
from cosim.env import VehicleRoutingEnv
from cosim.errors import CosimError
from cosim.policies import shortest_actions
from scenarios import ensure_built, recipe


def _background(sc, tmp_path, name: str, device_args: tuple[str, ...]) -> dict[str, tuple[str, float]]:
    """One `shortest` episode (the agents on their free-flow routes, the same in every run) with extra
    SUMO-wide device options: every background vehicle's route and arrival time."""
    out = tmp_path / f"{name}.vehroutes.xml"
    cfg = EnvConfig(continuation="free_flow", sumo_args=("--vehroute-output", str(out), *device_args))
    env = VehicleRoutingEnv(sc, cfg)
    try:
        obs, _ = env.reset(seed=5)
        while env.agents:
            obs, *_ = env.step(shortest_actions(env, obs))
        env.kernel.close()  # SUMO writes the file out when it closes
        agents = set(env.possible_agents)
    finally:
        env.close()
    return {
        v.get("id"): (v.find("route").get("edges"), float(v.get("arrival", "nan")))
        for v in ET.parse(out).getroot().iter("vehicle")
        if v.get("id") not in agents
    }


def test_fixed_background_routes_keep_the_device_settings_out_of_the_background(busy_grid_cfg, busy_grid, tmp_path):
    insertion = busy_grid
    fixed = ensure_built(
        recipe.adhoc("sumocfg", str(busy_grid_cfg)).with_overrides(agent_share=0.5, background_routing="fixed")
    )
    # as the files say, every background vehicle is a trip SUMO routes as it enters; fixed, none is
    assert insertion.manifest["background_routing"]["mode"] == "insertion"
    assert insertion.routed_at_insertion == insertion.manifest["counts"]["background_vehicles"] > 20
    assert fixed.manifest["background_routing"] == {"mode": "fixed", "routed_at_insertion": 0}
    text = fixed.background_file.read_text()
    assert "<trip " not in text and text.count("<route edges=") == fixed.manifest["counts"]["background_vehicles"]

    tuned = ("--device.rerouting.adaptation-steps", "10", "--device.rerouting.adaptation-interval", "2")
    plain, device = _background(fixed, tmp_path, "fixed", ()), _background(fixed, tmp_path, "fixed-tuned", tuned)
    assert len(plain) == fixed.manifest["counts"]["background_vehicles"] and plain == device
    # the same agents, the same files: routed at insertion, the device's settings move the background
    plain, device = _background(insertion, tmp_path, "ins", ()), _background(insertion, tmp_path, "ins-tuned", tuned)
    assert plain.keys() == device.keys()
    moved = sum(plain[v][0] != device[v][0] for v in plain)
    assert moved >= 3, moved

    # so `sumo-rerouting` takes settings other than SUMO's own only where the background is fixed
    settings = dict(control="sumo-rerouting", rerouting_adaptation_steps=10)
    with pytest.raises(
        CosimError, match=rf"routes {insertion.routed_at_insertion} background .*--background-routing fixed"
    ):
        VehicleRoutingEnv(insertion, EnvConfig(**settings))
    env = VehicleRoutingEnv(fixed, EnvConfig(**settings))
    try:
        env.reset(seed=1)
        while env.agents:
            env.step({})
        assert env.metrics["arrival_rate"] == 1.0
    finally:
        env.close()
