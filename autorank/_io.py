"""Files that are never half-written: a temporary file, fsync, then a rename."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._env import injected_faults
from .errors import UserError


def crash_point(name: str) -> None:
    """SIGKILL this process here when ``$AUTORANK_INJECT_FAULT`` holds ``driver:<name>``.

    Tests use it to kill the driver at an exact point (during the baseline, between writing a
    results file and renaming it in place) and check that ``--resume`` loses nothing.
    """
    if ("driver", name) in injected_faults():
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    crash_point(path.name)
    os.replace(tmp, path)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """``data`` as indented JSON with sorted keys, written atomically."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True, default=float) + "\n")


def check_writable(path: Path, flag: str = "--out") -> None:
    """Refuse, before any work and without creating anything, a directory that cannot be made
    or written: one under a file, or under a directory this user may not write.

    Raises:
        UserError: the one line that names ``flag``, the path and why.
    """
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{flag} {str(path)!r} cannot be made: {str(ancestor)!r} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {str(path)!r} cannot be written: no write permission on "
                        f"{str(ancestor)!r}; choose another {flag}")
