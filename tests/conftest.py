"""Shared fixtures: a private scenario cache for the session and the two shipped cities, built once.

Every test that needs a city asks for `helsinki` or `kouvola`; they are built on first use into a
temporary COSIM_HOME (never the user's ~/.cache/cosim) and reused by all later tests.
"""

from __future__ import annotations

import pytest

from scenarios import Scenario, ensure_built


@pytest.fixture(scope="session")
def cosim_home(tmp_path_factory):
    """A fresh COSIM_HOME for the whole session (the build cache lives in <it>/scenarios)."""
    home = tmp_path_factory.mktemp("cosim_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COSIM_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def helsinki(cosim_home) -> Scenario:
    return ensure_built("helsinki")


@pytest.fixture(scope="session")
def kouvola(cosim_home) -> Scenario:
    return ensure_built("kouvola")


@pytest.fixture(scope="session")
def net_city(cosim_home) -> Scenario:
    """A city built from a plain SUMO net (`--net`): Braunschweig from the eclipse-sumo wheel's tools."""
    from scenarios import recipe, sumotools

    net = sumotools.tool("game/bs3d/bs.net.xml")
    return ensure_built(recipe.adhoc("net", net, "bs3d").with_overrides(agents=20, veh_per_hour=600))
