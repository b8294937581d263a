"""User-facing errors and the command line's error contract. The CLI prints any UserError as one line
and exits non-zero; anything else is a bug. Every layer subclasses UserError for its own errors.
"""


class UserError(Exception):
    """Bad input or an impossible request: the message is meant for the user, as is."""


class RunFailed(UserError):
    """A run that could not do its work (SUMO died in the only episode asked for): one `error:` line and
    exit status 1, never a success with empty metrics."""

    exit_code = 1


MAX_SEED = 2**31 - 1  # SUMO takes a signed 32-bit seed: every run, episode and evaluation seed fits in it


def check_seed(flag: str, value: int, count: int = 1) -> None:
    """A seed (and the ``count - 1`` that follow it) must be a valid SUMO seed; one-line error otherwise."""
    top = MAX_SEED - count + 1
    if not 0 <= value <= top:
        raise UserError(f"{flag} must be in 0..{top} (SUMO's seeds are 32-bit), got {value}")


def check_positive(flag: str, value, zero_ok: bool = False) -> None:
    """A count or size given by the user must be positive (or >= 0); one-line error otherwise."""
    if value is not None and not (value >= 0 if zero_ok else value > 0):
        raise UserError(f"{flag} must be {'>= 0' if zero_ok else 'a positive number'}, got {value}")


def run_app(app, argv: list[str] | None = None) -> None:
    """Run a typer app with the command line's error contract: a UserError becomes one `error: …` line
    on stderr and exit status 2; Ctrl-C is one `error: interrupted` line and exit status 130; secrets
    are masked in both and in every log record. Used by `cosim` and by each layer's own
    `python -m <layer>.cli` entry point. Click's own handling is off (standalone_mode=False): typer turns
    Ctrl-C into a silent exit status 130 (it returns 130 in this mode, which nothing else here returns)."""
    import sys

    from core.secrets import redact, redact_logging

    abort, usage, leave = _click_exceptions()
    redact_logging()
    try:
        code = app(argv, standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
    except UserError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except (KeyboardInterrupt, *abort):
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except usage as exc:  # an unknown flag, a value of the wrong type: click's message, on one line
        command = getattr(getattr(exc, "ctx", None), "command_path", "") or "cosim"
        message = " ".join(redact(exc.format_message()).split())
        print(f"error: {message} (see `{command} --help`)", file=sys.stderr)
        sys.exit(exc.exit_code)
    except leave as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def _click_exceptions() -> tuple[tuple, tuple, tuple]:
    """(Abort, ClickException, Exit) classes of click and of the copy of click that typer >= 0.2x carries
    inside itself (`typer._click`): the command line is parsed by the latter, and an exception of one is
    not an instance of the other's classes."""
    import importlib

    mods = []
    for name in ("click.exceptions", "typer._click.exceptions"):
        try:
            mods.append(importlib.import_module(name))
        except ImportError:
            pass
    return tuple(tuple(getattr(m, cls) for m in mods if hasattr(m, cls)) for cls in ("Abort", "ClickException", "Exit"))


def standalone(register, help: str, argv: list[str] | None = None) -> None:
    """`python -m <layer>.cli …` for a layer whose commands are added by `register(app)`."""
    import typer

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, help=help)

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    run_app(app, argv)
