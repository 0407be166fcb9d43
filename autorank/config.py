"""The typed configuration of a search: CLI flags over a space preset, saved with the run."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .sweep.space import FinetuneSettings, SpaceConfig, load_space, space_from_dict

RUNNERS = ("ray", "local")
VAL_SOURCES = ("auto", "train", "test")


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search needs; ``autorank search`` flags map one to one onto these fields."""

    model: str = "resnet18"
    dataset: str = "cifar10"
    data_dir: str | None = None  # default: $AUTORANK_DATA_DIR
    download: bool = False  # let torchvision fetch CIFAR when it is not found
    checkpoint: str | None = None  # None: train a baseline first (cached)
    budget: int = 50  # trials, including the seeds and failed ones
    parallel: int | None = None  # concurrent trials; default: CPUs (or GPUs) / per-trial share
    cpus_per_trial: int | None = None  # default: CPUs / parallel (torch threads follow it)
    gpus_per_trial: float = 0.0  # fractions share a GPU between trials
    address: str | None = None  # a Ray cluster: "auto" or "ray://host:port"; None = local
    storage: str | None = None  # Optuna storage URL; default: SQLite in the run directory
    storage_path: str | None = None  # Ray Tune's storage; default: <out>/ray
    study_name: str = "autorank"
    # A driver records a heartbeat per running trial this often (SQL storages); a trial silent
    # for 3x as long is failed as interrupted by any driver of the study.
    heartbeat_s: int = 10
    out: str | None = None  # run directory; default runs/<model>-<dataset>-<time>
    seed: int = 0
    runner: str = "ray"  # "ray" (Ray Tune + OptunaSearch) or "local" (in-process, sequential)
    device: str = "auto"
    # The shared checkpoints saw all training images: for a checkpoint of unknown training data
    # ("auto" with --checkpoint) val is a seeded half of the test split, test the other half.
    val_source: str = "auto"
    val_size: int | float | None = None
    baseline_epochs: int = 30  # when no checkpoint: epochs of the baseline trained first
    input_size: int = 32
    space: SpaceConfig = field(default_factory=SpaceConfig)
    space_name: str = "default"

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise UserError(f"--budget must be a positive number of trials, got {self.budget}")
        if self.runner not in RUNNERS:
            raise UserError(f"--runner must be one of {list(RUNNERS)}, got {self.runner!r}")
        if self.val_source not in VAL_SOURCES:
            raise UserError(f"--val-source must be one of {list(VAL_SOURCES)}, got {self.val_source!r}")
        if self.parallel is not None and self.parallel < 1:
            raise UserError(f"--parallel must be >= 1, got {self.parallel}")
        if self.cpus_per_trial is not None and self.cpus_per_trial < 1:
            raise UserError(f"--cpus-per-trial must be >= 1, got {self.cpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise UserError(f"--gpus-per-trial must be >= 0, got {self.gpus_per_trial}")
        if self.heartbeat_s < 1:
            raise UserError(f"--heartbeat must be >= 1 second, got {self.heartbeat_s}")
        if self.baseline_epochs < 1 or self.input_size < 8:
            raise UserError("--baseline-epochs must be >= 1 and --input-size >= 8")

    @property
    def resolved_val_source(self) -> str:
        from .baseline import resolve_val_source

        return resolve_val_source(self.val_source, self.checkpoint)

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out).expanduser().resolve()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{self.model}-{self.dataset.replace(':', '_').replace('/', '_')}-{stamp}"
        return Path("runs", name).resolve()

    def data_root(self) -> str | None:
        return self.data_dir or os.environ.get("AUTORANK_DATA_DIR")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["space"] = _plain(data["space"])
        return data


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def make_config(*, space: str | None = None, finetune_steps: int | None = None,
                objectives: list[str] | None = None, **flags: Any) -> SearchConfig:
    """A :class:`SearchConfig` from CLI-style flags: the space preset, then the flags over it."""
    space_name = space or "default"
    space_cfg = load_space(space_name)
    overrides: dict[str, Any] = {}
    if objectives:
        overrides["objectives"] = ["accuracy", *[o for o in objectives if o != "accuracy"]]
    if finetune_steps is not None:
        overrides["finetune"] = {"steps": finetune_steps}
    if overrides:
        space_cfg = space_from_dict(overrides, base=space_cfg)
    known = {f.name for f in fields(SearchConfig)}
    unknown = sorted(set(flags) - known)
    if unknown:
        raise UserError(f"unknown option(s) {unknown}")
    return SearchConfig(space=space_cfg, space_name=space_name,
                        **{k: v for k, v in flags.items() if v is not None})


def save_config(cfg: SearchConfig, path: Path) -> None:
    from .sweep.store import atomic_write

    atomic_write(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_config(path: Path) -> SearchConfig:
    """Read a run's saved ``config.yaml`` (``yaml.safe_load``)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"cannot read run configuration {str(path)!r}: {err}") from err
    if not isinstance(data, dict):
        raise UserError(f"{str(path)!r} is not an autorank run configuration")
    space = data.pop("space", {}) or {}
    ft = space.pop("finetune", {}) or {}
    space_cfg = space_from_dict(space)
    space_cfg = dataclasses.replace(space_cfg, finetune=FinetuneSettings(**ft))
    known = {f.name for f in fields(SearchConfig)}
    return SearchConfig(space=space_cfg, **{k: v for k, v in data.items() if k in known})
