"""The scenario layer's error (the base class and the command line's contract are in core/errors.py)."""

from core.errors import UserError


class ScenarioError(UserError):
    """A scenario cannot be found, built or loaded."""
