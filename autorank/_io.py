"""Files that are never half-written: a temporary file, fsync, then a rename."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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


def check_out(out: str | os.PathLike[str]) -> Path:
    """``out`` resolved, refused when it is a file or holds files other than an earlier export's
    (one with ``export.json``), or cannot be written: checked before any long work, and again
    by :func:`staged`.

    Raises:
        UserError: as above.
    """
    target = Path(out).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {str(target)!r} is a file; give a directory")
    check_writable(target)
    if target.exists() and any(target.iterdir()) and not (target / "export.json").exists():
        raise UserError(f"--out {str(target)!r} holds other files; give a new or empty directory "
                        "(an earlier export there is replaced)")
    return target


@contextmanager
def staged(out: str | os.PathLike[str]) -> Iterator[Path]:
    """A new directory beside ``out`` to write an export into (see :func:`check_out`): when the
    block ends it takes the place of ``out`` (an earlier export there is replaced), and if the
    block raises it is removed, so a failure never leaves a partial export behind."""
    target = check_out(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
