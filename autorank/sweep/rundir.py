"""The paths of a run directory, and the lock that keeps a second search off it."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

# What a run directory holds (see the README's "Run directory"), by attribute of RunDir.
_FILES = {"config": "config.yaml", "baseline": "baseline.json", "trials": "trials.csv",
          "pareto": "pareto.csv", "plot": "pareto.png", "weights": "weights"}


@dataclass(frozen=True)
class RunDir:
    """Paths of a run directory: ``path`` and, below it, the files of :data:`_FILES`."""

    path: Path
    config: Path = field(init=False)
    baseline: Path = field(init=False)
    trials: Path = field(init=False)
    pareto: Path = field(init=False)
    plot: Path = field(init=False)
    weights: Path = field(init=False)

    def __post_init__(self) -> None:
        for name, file in _FILES.items():
            object.__setattr__(self, name, self.path / file)

    def default_storage(self) -> str:
        return f"sqlite:///{(self.path / 'study.db').resolve()}"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the run for the block; a second search on it is refused."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another autorank process is using {str(self.path)!r}; wait for "
                                "it to finish or choose another --out") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
