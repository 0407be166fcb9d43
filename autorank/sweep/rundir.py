"""The paths of a run directory, the lock that keeps a second search off it, and the
configuration a resumed run goes on with."""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import SearchConfig, SpaceConfig, load_config
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

    def in_use(self) -> bool:
        """Whether a search holds the run's lock now."""
        try:
            with open(self.path / ".lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle, fcntl.LOCK_UN)
        except OSError:  # BlockingIOError included
            return True
        return False

    def finished_trials(self) -> int:
        """Trials of ``trials.csv`` that ran to an end (an interrupted one did not)."""
        if not self.trials.exists():
            return 0
        with open(self.trials, newline="") as handle:
            return sum(row.get("state") == "complete" or (
                row.get("state") == "failed"
                and not (row.get("error") or "").startswith("interrupted"))
                for row in csv.DictReader(handle))


def saved_config(run: RunDir) -> SearchConfig:
    """The configuration saved in the run directory.

    Raises:
        UserError: the directory holds no run, or its ``config.yaml`` cannot be read.
    """
    if not run.config.exists():
        raise UserError(f"--resume: {str(run.path)!r} holds no autorank run (no config.yaml)")
    return load_config(run.config)


# What a resume may change: how many trials, how and where they run; not what they compute.
RESUME_MAY_CHANGE = frozenset({
    "budget", "parallel", "cpus_per_trial", "gpus_per_trial", "address", "runner", "heartbeat_s",
    "device", "storage", "storage_path", "out", "download", "data_dir"})
# The flags of ``autorank search`` that set the search space (make_config's arguments).
SPACE_FLAGS = ("space", "objectives", "finetune_steps", "min_steps", "max_steps", "eta")
_FLAG_NAMES = {"heartbeat_s": "--heartbeat", "space_name": "--space", "val_size": "val_size"}


def _changed(flag: str, new: Any, old: Any, run: Path) -> UserError:
    return UserError(f"--resume: {flag} {new} differs from the run's {old} in {str(run)!r}; a "
                     f"resumed run keeps what its trials compute: leave {flag} out, or start a "
                     "new run with another --out")


def _rungs(space: SpaceConfig) -> str:
    if space.fidelity is None:
        return f"--finetune-steps {space.finetune.steps}"
    f = space.fidelity
    return f"--min-steps {f.min_steps} --max-steps {f.max_steps} --eta {f.eta}"


def _same_file(a: str | None, b: str | None) -> bool:
    return a == b or (a is not None and b is not None and os.path.realpath(a) == os.path.realpath(b))


def check_resumable(saved: SearchConfig, cfg: SearchConfig, run: Path) -> None:
    """Refuse ``cfg`` as the continuation of the run saved as ``saved`` when it changes what
    the trials compute (model, data, checkpoint, seed, search space, objectives, fine-tune);
    the fields of :data:`RESUME_MAY_CHANGE` may differ.

    Raises:
        UserError: one line naming the flag, both values, and what to do.
    """
    for name in (f.name for f in dataclasses.fields(SearchConfig)):
        old, new = getattr(saved, name), getattr(cfg, name)
        if name in RESUME_MAY_CHANGE or old == new:
            continue
        if name == "checkpoint" and _same_file(old, new):
            continue
        if name != "space":
            raise _changed(_FLAG_NAMES.get(name, "--" + name.replace("_", "-")), new, old, run)
        if old.objectives != new.objectives:
            raise _changed("--objectives", ",".join(new.objectives[1:]),
                           ",".join(old.objectives[1:]), run)
        if (old.fidelity, old.finetune) != (new.fidelity, new.finetune):
            raise _changed(_rungs(new).split()[0], _rungs(new), _rungs(old), run)
        raise UserError(f"--resume: the search space differs from the one saved in "
                        f"{str(run / 'config.yaml')!r} (preset {saved.space_name!r}); start "
                        "a new run with another --out to search another space")


def _check_space_flags(saved: SearchConfig, flags: Mapping[str, Any], run: Path) -> None:
    """Refuse search-space flags given again on ``--resume`` with other values than the run's."""
    space, fid = saved.space, saved.space.fidelity
    for flag in (k for k in SPACE_FLAGS if flags.get(k) is not None):
        value = flags[flag]
        if flag == "space" and value != saved.space_name:
            raise _changed("--space", value, saved.space_name, run)
        if flag == "objectives" and ("accuracy", *[o for o in value if o != "accuracy"]) \
                != space.objectives:
            raise _changed("--objectives", ",".join(value), ",".join(space.objectives[1:]), run)
        if flag in ("space", "objectives"):
            continue
        same = (fid is None and space.finetune.steps == value) if flag == "finetune_steps" else \
            (fid is not None and getattr(fid, flag) == value)
        if not same:
            raise _changed(f"--{flag.replace('_', '-')}", value, _rungs(space), run)


def resume_config(flags: Mapping[str, Any]) -> SearchConfig:
    """The configuration ``autorank search --resume`` goes on with: the run's saved one, with
    the flags given again on the command line over it (a flag left out keeps its saved value).

    Args:
        flags: the flags given, by :func:`autorank.config.make_config`'s names; ``out`` is
            the run. Those of :data:`RESUME_MAY_CHANGE` (e.g. a larger ``budget``) replace
            the saved values; any other must equal the saved one.

    Raises:
        UserError: no ``out``, no run there, or a flag that would change what trials compute.
    """
    if not flags.get("out"):
        newest = newest_run()
        raise UserError("--resume needs --out RUN, the run directory to continue" + (
            f" (the newest here: --out {newest})" if newest else ""))
    run = RunDir(Path(str(flags["out"])).expanduser().resolve())
    saved = saved_config(run)
    _check_space_flags(saved, flags, run.path)
    given = {k: v for k, v in flags.items() if k not in SPACE_FLAGS and v is not None}
    cfg = dataclasses.replace(saved, **{"storage": None, **given})
    check_resumable(saved, cfg, run.path)
    return cfg


def newest_run(parent: Path = Path("runs")) -> Path | None:
    """The run directory under ``parent`` (default ``runs``) whose name sorts last, if any."""
    runs = sorted(p for p in parent.glob("*") if (p / _FILES["config"]).is_file()) \
        if parent.is_dir() else []
    return runs[-1] if runs else None


def unstarted_run(cfg: SearchConfig) -> Path | None:
    """A run directory an earlier search of this same configuration (without ``out``) left
    under ``runs/`` before any trial finished, e.g. while training its baseline; not in use.

    The search goes on there rather than make another directory per attempt.
    """
    if cfg.out or cfg.storage or not Path("runs").is_dir():
        return None
    prefix = cfg.out_dir().name.rsplit("-", 2)[0]  # <model>-<dataset>-<date>-<time>
    plain = dataclasses.replace(cfg, out=None, storage=None)
    for path in sorted(Path("runs").glob(f"{prefix}-*-*"), reverse=True):
        run = RunDir(path.resolve())
        if not run.config.is_file() or run.pareto.exists() or run.finished_trials():
            continue
        try:
            saved = load_config(run.config)
        except UserError:
            continue
        if saved.storage == run.default_storage() and not run.in_use() and \
                dataclasses.replace(saved, out=None, storage=None) == plain:
            return run.path
    return None
