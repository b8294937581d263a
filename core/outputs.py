"""One policy for the folder every command writes its output into (`train --out`, `compare --out`,
`demos --out`): an output never overwrites or deletes what it did not write.

A folder given as an output may be new, empty, or an earlier output of the same command (which that
command resumes or replaces). Anything else — a file, the current folder, a folder holding the user's
own files — is refused with one line naming what is there, before any work starts. Whether a folder is
"an earlier output" is each command's to say, from the names in it.

Standard library only (this is the base layer).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.errors import UserError


def check_output(out: str | Path, command: str, is_earlier_output: Callable[[set[str]], bool], *,
                 error: type[UserError] = UserError, flag: str = "--out") -> Path:  # fmt: skip
    """The absolute output folder of `command` (e.g. "cosim train"), checked: new, empty or an earlier
    output of that command (``is_earlier_output(names)``), never the current folder or one holding it,
    and its nearest existing parent writable. Raises `error` with one line otherwise."""
    out = Path(os.path.abspath(Path(out).expanduser()))
    if out.is_symlink():  # an output is renamed into place: a link would be replaced, not followed
        raise error(f"{flag} {out} is a symbolic link; name the folder it points to ({os.path.realpath(out)})")
    if out.exists() and not out.is_dir():
        raise error(f"{flag} {out} exists and is not a folder; choose another {flag}")
    try:
        cwd = Path.cwd()
    except OSError:  # the current folder was deleted
        cwd = None
    if cwd is not None and (out == cwd or out in cwd.parents):
        raise error(f"{flag} {out} is the current folder or holds it; name a folder for the output")
    if out.is_dir():
        try:
            names = set(os.listdir(out))
        except OSError as exc:
            raise error(f"{flag} {out} cannot be read: {exc.strerror or exc}") from None
        if names and not is_earlier_output(names):
            shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
            raise error(
                f"{flag} {out} is not empty and is not an earlier `{command}` output (it holds {shown}); "
                f"choose another {flag}"
            )
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise error(f"{flag} {out}: {parent} is a file, not a folder")
    try:  # a real try, not os.access: root passes that check on read-only and virtual file systems
        os.rmdir(tempfile.mkdtemp(prefix=".cosim-probe-", dir=parent))
    except OSError as exc:
        raise error(f"{flag} {out} cannot be written ({parent}: {exc.strerror or exc})") from None
    return out
