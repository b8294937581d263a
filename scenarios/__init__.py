"""City scenarios: recipes, the OSM -> SUMO builder with its cache, and the routing graph of a built net.

`ensure_built("helsinki")` is the one call the rest of the suite needs: it returns the built Scenario,
building it into the cache first if needed.
"""

from scenarios.build import ensure_built
from scenarios.errors import ScenarioError
from scenarios.scenario import Scenario, Trip

__all__ = ["Scenario", "ScenarioError", "Trip", "ensure_built"]
