"""Errors of the co-simulation layer."""

from scenarios.errors import UserError


class CosimError(UserError):
    """Bad environment/kernel input (unknown backend, too many agents, an action outside the mask, ...)."""


class SumoFault(RuntimeError):
    """SUMO failed or died mid-episode. The env ends that episode cleanly and restarts SUMO on reset."""
