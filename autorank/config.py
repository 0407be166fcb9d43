"""The typed configuration of a search: a search-space preset (``search_spaces/*.yaml``), CLI
flags over it, and the resolved configuration saved with the run."""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from . import _env
from ._io import atomic_write
from .baseline import BaselineSpec
from .decompose import list_methods
from .engine import FinetuneConfig
from .errors import UserError
from .samplers import list_samplers

OBJECTIVES: dict[str, tuple[str, str]] = {
    "accuracy": ("val_accuracy", "max"),
    "params": ("params", "min"),
    "flops": ("flops", "min"),
    "latency": ("predicted_latency_ms", "min"),  # the latency table's (autorank.latency)
}
PRESETS_DIR = Path(__file__).resolve().parent / "search_spaces"


@dataclass(frozen=True)
class Fidelity:
    """The multi-fidelity search's rungs of fine-tune steps: ``min_steps``,
    ``min_steps * eta``, ... and ``max_steps`` last (see ``autorank.sweep.promotion``).

    A trial is judged after ``min_steps``; the best ``1/eta`` of each rung continue, from
    their own weights, to the next.
    """

    min_steps: int
    max_steps: int
    eta: int = 3

    def __post_init__(self) -> None:
        if self.min_steps < 1 or self.max_steps < self.min_steps or self.eta < 2:
            raise UserError(f"fidelity needs 1 <= min_steps <= max_steps and eta >= 2, got "
                            f"min_steps={self.min_steps}, max_steps={self.max_steps}, eta={self.eta}")

    @property
    def rungs(self) -> tuple[int, ...]:
        """Total fine-tune steps at each rung, increasing; the last is ``max_steps``."""
        steps, out = self.min_steps, []
        while steps < self.max_steps:
            out.append(steps)
            steps *= self.eta
        return (*out, self.max_steps)

    @property
    def top(self) -> int:
        """The index of the last rung."""
        return len(self.rungs) - 1


@dataclass(frozen=True)
class SpaceConfig:
    """A search-space preset (``search_spaces/*.yaml``); every key is optional."""

    methods: tuple[str, ...] = ("tucker2", "cp3", "tt", "svd", "spatial_svd", "prune", "keep")
    exclude: tuple[str, ...] = ()  # globs on dotted layer names
    exclude_first_conv: bool = True
    exclude_classifier: bool = True
    min_params: int = 1000  # smaller layers are kept: their factorization cannot pay off
    strength: tuple[float, float] = (0.0, 1.0)  # range of the global weakening factor w
    scale: tuple[float, float] = (-1.0, 1.0)  # range of the per-layer (or per-group) log2 rank offset
    groups: int = 0  # 0: a method and an offset per layer; N: per contiguous group of layers
    musco_w: float = 0.8  # the MUSCO seed's weakening factor (Gusak et al. 2019)
    objectives: tuple[str, ...] = ("accuracy", "params")
    # Optuna's Gaussian-process sampler with the max_drop constraint: ahead of random sampling
    # on each of 3 seeds in bench/search_quality.py (ResNet-20, 40 trials; results in
    # bench/results/search_quality.md), where multivariate TPE had tied random sampling
    sampler: str = "gp"
    # The sampler's region of interest: a trial whose validation accuracy falls more than this
    # below the baseline's is infeasible to it (Optuna's constraints), so it samples where
    # users pick models; None: every trial counts alike. The front lists every trial anyway.
    max_drop: float | None = 0.10
    latency_batch: int = 32
    # the target latency is predicted for (the latency objective) and the front is timed on
    # at the end: torch (eager) or onnxruntime, and the latency objective's batch size
    latency_backend: str = "torch"
    latency_objective_batch: int = 1
    # how ``prune`` picks the channels it keeps: l1 / l2 filter norm (Li et al. 2017), or the
    # L2 norm of the whole coupled group (DepGraph, Fang et al. 2023)
    prune_importance: str = "l1"
    # the short fine-tune every trial gets (the search's --seed is its seed)
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(steps=200))
    # None: one rung, every trial gets finetune's steps; else the rungs of the multi-fidelity
    # search, whose steps replace finetune.steps (the rest of the recipe is finetune's)
    fidelity: Fidelity | None = None

    def __post_init__(self) -> None:
        _check_space(self)


def _fail(key: str, why: str) -> UserError:
    return UserError(f"search space: {key}: {why}")


def _check_range(key: str, value: tuple[float, float], lo: float, hi: float) -> None:
    if len(value) != 2 or not lo <= value[0] <= value[1] <= hi:
        raise _fail(key, f"needs [low, high] with {lo} <= low <= high <= {hi}, got {list(value)}")


def _check_space(cfg: SpaceConfig) -> None:
    if not cfg.methods:
        raise _fail("methods", f"is empty; give at least one of {list_methods()}")
    for m in cfg.methods:
        if m not in list_methods():
            raise _fail("methods", f"unknown method {m!r}; expected one of {list_methods()}")
    if not cfg.objectives or cfg.objectives[0] != "accuracy":
        raise _fail("objectives", f"must start with 'accuracy', then any of {list(OBJECTIVES)[1:]}")
    for o in cfg.objectives:
        if o not in OBJECTIVES:
            raise _fail("objectives", f"unknown objective {o!r}; expected one of {list(OBJECTIVES)}")
    if cfg.sampler not in list_samplers():
        raise _fail("sampler", f"unknown sampler {cfg.sampler!r}; expected one of {list_samplers()}")
    _check_range("strength", cfg.strength, 0.0, 1.0)
    _check_range("scale", cfg.scale, -8.0, 8.0)
    if cfg.max_drop is not None and not 0.0 < cfg.max_drop <= 1.0:
        raise _fail("max_drop", f"must be in (0, 1] or null, got {cfg.max_drop}")
    if not 0.0 <= cfg.musco_w <= 1.0:
        raise _fail("musco_w", f"must be in [0, 1], got {cfg.musco_w}")
    if cfg.groups < 0:
        raise _fail("groups", f"must be >= 0 (0: per layer), got {cfg.groups}")
    if cfg.prune_importance not in ("l1", "l2", "group"):
        raise _fail("prune_importance", f"unknown {cfg.prune_importance!r}; expected one of "
                    "['l1', 'l2', 'group']")
    if cfg.min_params < 0 or cfg.latency_batch < 1 or cfg.latency_objective_batch < 1:
        raise _fail("min_params/latency_batch/latency_objective_batch", "must be >= 0, >= 1, >= 1")
    if cfg.latency_backend not in ("torch", "onnxruntime"):
        raise _fail("latency_backend", f"unknown {cfg.latency_backend!r}; expected one of "
                    "['torch', 'onnxruntime']")
    if cfg.latency_backend == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
        raise _fail("latency_backend", "onnxruntime is not installed: pip install "
                    "'autorank[onnx]', or use torch")
    if (cfg.finetune.steps is None) == (cfg.finetune.epochs is None):
        raise _fail("finetune", "give exactly one of steps and epochs")


_TYPES: dict[str, type] = {"methods": tuple, "exclude": tuple, "exclude_first_conv": bool,
                           "exclude_classifier": bool, "min_params": int, "strength": tuple,
                           "scale": tuple, "groups": int, "musco_w": float, "max_drop": float,
                           "objectives": tuple, "sampler": str, "latency_batch": int, "finetune": dict,
                           "latency_backend": str, "latency_objective_batch": int,
                           "fidelity": dict, "prune_importance": str}


_NULLABLE = {"max_drop", "fidelity"}


def _typed(key: str, value: Any, want: type) -> Any:
    if value is None and key in _NULLABLE:
        return None
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is tuple and isinstance(value, list):
        return tuple(value)
    if want is tuple and isinstance(value, str):
        return (value,)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise _fail(key, f"expected {want.__name__}, got {type(value).__name__} {value!r}")
    return value


# The fine-tune keys a preset may set, with their YAML types (seed: the search's --seed).
_FINETUNE_TYPES: dict[str, type] = {
    "steps": int, "epochs": float, "lr": float, "schedule": str, "momentum": float,
    "weight_decay": float, "batch_size": int, "augment": bool, "distill": bool, "kd_alpha": float,
    "kd_temperature": float, "bn_batches": int, "memory_format": str}


def _finetune_from(data: Mapping[str, Any], base: FinetuneConfig) -> FinetuneConfig:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _FINETUNE_TYPES:
            raise _fail(f"finetune.{key}", f"unknown key; expected one of {sorted(_FINETUNE_TYPES)}")
        out[key] = None if value is None and key in ("steps", "epochs") else \
            _typed(f"finetune.{key}", value, _FINETUNE_TYPES[key])
    if "epochs" in out and "steps" not in out:
        out["steps"] = None  # an epoch budget replaces the preset's steps
    try:
        return dataclasses.replace(base, **out)
    except UserError as err:
        raise UserError(f"search space: {err}") from None


def _fidelity_from(data: Mapping[str, Any]) -> Fidelity:
    known = ("min_steps", "max_steps", "eta")
    for key in data:
        if key not in known:
            raise _fail(f"fidelity.{key}", f"unknown key; expected one of {list(known)}")
    values = {k: _typed(f"fidelity.{k}", v, int) for k, v in data.items()}
    if "min_steps" not in values or "max_steps" not in values:
        raise _fail("fidelity", "needs min_steps and max_steps (and optionally eta)")
    try:
        return Fidelity(**values)
    except UserError as err:
        raise UserError(f"search space: {err}") from None


def space_from_dict(data: Mapping[str, Any], *, base: SpaceConfig | None = None) -> SpaceConfig:
    """A :class:`SpaceConfig` from a mapping, over ``base``; unknown keys and wrong types refused."""
    if not isinstance(data, Mapping):
        raise UserError(f"search space: expected a mapping of keys, got {type(data).__name__}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _TYPES:
            raise _fail(str(key), f"unknown key; expected one of {sorted(_TYPES)}")
        values[key] = _typed(key, value, _TYPES[key])
    if "finetune" in values:
        values["finetune"] = _finetune_from(values["finetune"], (base or SpaceConfig()).finetune)
    if values.get("fidelity") is not None:
        values["fidelity"] = _fidelity_from(values["fidelity"])
    cfg = base or SpaceConfig()
    return SpaceConfig(**{**{f.name: getattr(cfg, f.name) for f in fields(SpaceConfig)}, **values})


def list_presets() -> list[str]:
    """Names of the search-space presets shipped with autorank."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path) -> SpaceConfig:
    """Load a preset by name (``default``, see :func:`list_presets`) or a YAML file path.

    YAML is read with ``yaml.safe_load``: tags that build Python objects are refused.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESETS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise UserError(f"unknown search space {str(name_or_path)!r}; expected a YAML file "
                            f"or one of {list_presets()}")
    if not path.exists():
        raise UserError(f"search space file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"search space {str(path)!r} is not valid YAML: "
                        f"{str(err).splitlines()[0]}") from err
    return space_from_dict(data)


def objective_metrics(cfg: SpaceConfig) -> tuple[list[str], list[str]]:
    """Metric names and Ray/Optuna modes (``max``/``min``) of the preset's objectives."""
    pairs = [OBJECTIVES[o] for o in cfg.objectives]
    return [p[0] for p in pairs], [p[1] for p in pairs]


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
    # None: the data set's own image side (image folders: 32); the images are resized to it
    # and the model built for it (a torchvision model keeps its ImageNet stem above 64)
    input_size: int | None = None
    num_classes: int | None = None  # None: the data set's; given, it must be the data set's
    # a checkpoint for other classes: epochs of its new head alone, then of all layers
    transfer_head_epochs: int = 2
    transfer_epochs: int = 8
    space: SpaceConfig = field(default_factory=SpaceConfig)
    space_name: str = "default"

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise UserError(f"--budget must be a positive number of trials, got {self.budget}")
        if not 0 <= self.seed < 2**32:
            raise UserError(f"--seed must be in [0, 2**32), got {self.seed}")
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
        if self.baseline_epochs < 1 or (self.input_size is not None and self.input_size < 8):
            raise UserError("--baseline-epochs must be >= 1 and --input-size >= 8")
        if self.num_classes is not None and self.num_classes < 2:
            raise UserError(f"--num-classes must be >= 2, got {self.num_classes}")
        self.baseline_spec()  # checks the transfer's epochs

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out).expanduser().resolve()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{self.model}-{self.dataset.replace(':', '_').replace('/', '_')}-{stamp}"
        return Path("runs", name).resolve()

    def data_root(self) -> str | None:
        return self.data_dir or _env.data_dir()

    def baseline_spec(self, *, progress: bool = False) -> BaselineSpec:
        """Which baseline this search compresses, and on which images."""
        return BaselineSpec(
            self.model, self.dataset, checkpoint=self.checkpoint, data_dir=self.data_root(),
            val_source=self.val_source, seed=self.seed, baseline_epochs=self.baseline_epochs,
            input_size=self.input_size, device=self.device, val_size=self.val_size,
            download=self.download, progress=progress, num_classes=self.num_classes,
            transfer_head_epochs=self.transfer_head_epochs, transfer_epochs=self.transfer_epochs)

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
                min_steps: int | None = None, max_steps: int | None = None,
                eta: int | None = None, objectives: list[str] | None = None,
                **flags: Any) -> SearchConfig:
    """A :class:`SearchConfig` from CLI-style flags: the space preset, then the flags over it.

    ``finetune_steps`` is one rung of that many steps (no multi-fidelity); ``min_steps``,
    ``max_steps`` and ``eta`` set the rungs (over the preset's ``fidelity``, if any).
    """
    space_name = space or "default"
    space_cfg = load_space(space_name)
    overrides: dict[str, Any] = {}
    if objectives:
        overrides["objectives"] = ["accuracy", *[o for o in objectives if o != "accuracy"]]
    rung_flags = {k: v for k, v in (("min_steps", min_steps), ("max_steps", max_steps),
                                    ("eta", eta)) if v is not None}
    if finetune_steps is not None and rung_flags:
        raise UserError("--finetune-steps N is one rung of N steps; give it or --min-steps/"
                        "--max-steps/--eta, not both")
    if finetune_steps is not None:
        overrides["finetune"] = {"steps": finetune_steps}
        overrides["fidelity"] = None
    if rung_flags:
        base = space_cfg.fidelity
        steps = space_cfg.finetune.steps or 1
        start = dataclasses.asdict(base) if base else {"min_steps": steps, "max_steps": steps, "eta": 3}
        overrides["fidelity"] = {**start, **rung_flags}
    if overrides:
        space_cfg = space_from_dict(overrides, base=space_cfg)
    known = {f.name for f in fields(SearchConfig)}
    unknown = sorted(set(flags) - known)
    if unknown:
        raise UserError(f"unknown option(s) {unknown}")
    return SearchConfig(space=space_cfg, space_name=space_name,
                        **{k: v for k, v in flags.items() if v is not None})


def save_config(cfg: SearchConfig, path: Path) -> None:
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
    space_cfg = dataclasses.replace(space_cfg, finetune=FinetuneConfig(**ft))
    known = {f.name for f in fields(SearchConfig)}
    return SearchConfig(space=space_cfg, **{k: v for k, v in data.items() if k in known})
