"""Errors of the co-simulation layer."""

from core.errors import UserError


class CosimError(UserError):
    """Bad environment/kernel input (unknown backend, too many agents, an action outside the mask, ...)."""


class SumoFault(RuntimeError):
    """SUMO failed or died mid-episode. The env ends that episode cleanly and restarts SUMO on reset."""


class CommandRejected(RuntimeError):
    """SUMO is alive but refused one command (e.g. a route change it cannot apply where the vehicle is).
    Not a fault: the env logs the message, keeps the vehicle on the route SUMO has, and goes on."""
