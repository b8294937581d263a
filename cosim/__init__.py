"""SUMO co-simulation: the kernel (the only code that talks to SUMO) and the multi-agent environment."""

from cosim.env import EnvConfig, VehicleRoutingEnv
from cosim.errors import CosimError, SumoFault

__all__ = ["CosimError", "EnvConfig", "SumoFault", "VehicleRoutingEnv"]
