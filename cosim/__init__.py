"""SUMO co-simulation: the kernel (the only code that talks to SUMO) and the multi-agent environment.

Names are imported lazily so that `cosim --help` and the error types load without SUMO and numpy.
"""

from cosim.errors import CosimError, SumoFault

__all__ = ["CosimError", "EnvConfig", "SumoFault", "VehicleRoutingEnv"]


def __getattr__(name):
    if name == "EnvConfig":
        from cosim.config import EnvConfig

        return EnvConfig
    if name == "VehicleRoutingEnv":
        from cosim.env import VehicleRoutingEnv

        return VehicleRoutingEnv
    raise AttributeError(name)
