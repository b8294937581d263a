"""User-facing errors. The CLI prints any UserError as one line and exits non-zero; anything else is a bug.

The base lives in the lowest layer (scenarios) so every layer above can subclass it without importing
upwards.
"""


class UserError(Exception):
    """Bad input or an impossible request: the message is meant for the user, as is."""


class ScenarioError(UserError):
    """A scenario cannot be found, built or loaded."""
