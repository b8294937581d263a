"""The one secret redactor: every text this suite logs or stores from the outside world (an LLM
server's answer or error, an exception, a run's config, W&B tables) passes through `redact` first.

Secrets live only in environment variables (OPENAI_API_KEY, WANDB_API_KEY, RAY_AUTH_TOKEN, ...): any
variable whose name says key, token, secret, password, credential or auth is one. Their values are
masked wherever they appear, and keys with such names are dropped from mappings — a server that echoes
the API key in its error message must not put it into llm_log.jsonl. `RedactingFilter` applies the same
to Python's logging.

Standard library only (this is the base layer).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

# "TOKEN" but not "TOKENS": an API token is a secret, the LLM log's prompt_tokens and sed.max_tokens are counts
SECRET_NAME = re.compile(r"KEY|TOKEN(?!S)|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)
MASK = "***"
MIN_SECRET_LEN = 8  # shorter values ("1", "true") are settings, not secrets, and would mask everything


def secret_values() -> list[str]:
    """Values of the environment variables that look like secrets, longest first."""
    found = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and v and len(v) >= MIN_SECRET_LEN}
    return sorted(found, key=len, reverse=True)


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of `obj` with secret-named keys dropped and secret values masked (recursively through
    dicts, lists and tuples; other objects are returned as they are)."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {k: redact(v, secrets) for k, v in obj.items() if not (isinstance(k, str) and SECRET_NAME.search(k))}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, secrets) for v in obj)
    if isinstance(obj, str):
        for s in secrets:
            if s in obj:
                obj = obj.replace(s, MASK)
        return obj
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = secret_values()
        if secrets:
            text = record.getMessage()
            clean = redact(text, secrets)
            if clean != text:
                record.msg, record.args = clean, None
        return True


def redact_logging() -> None:
    """Install RedactingFilter on the root logger's handlers (and on the last-resort handler), once."""
    handlers = [*logging.getLogger().handlers, logging.lastResort]
    for h in handlers:
        if h is not None and not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())
