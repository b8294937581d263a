"""Errors of the LLM layer."""

from core.errors import UserError


class LLMError(UserError):
    """A backend cannot be made or used (missing model, missing key, unknown provider)."""
