"""The flags of every ``autorank`` subcommand, each with its help text (defaults stated).

Kept apart from :mod:`autorank.cli`, which pairs each of these with its handler.
"""

from __future__ import annotations

import argparse
from typing import Any

_DATASETS = "cifar10, cifar100, digits, synthetic, npz:PATH or imagefolder:PATH"
_VAL_SOURCES = ["auto", "train", "test"]


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a registered model name (see `autorank models`)")
    p.add_argument("--checkpoint", default=None,
                   help="state-dict checkpoint to load (a file, or a name in $AUTORANK_WEIGHTS_DIR)")
    p.add_argument("--num-classes", type=int, default=10,
                   help="classes of the model's classifier (default 10)")
    p.add_argument("--input-size", type=int, default=32,
                   help="square input side in pixels (default 32)")


def data_size_args(p: argparse.ArgumentParser) -> None:
    """``--input-size`` and ``--num-classes`` of a command with a data set (default: its own)."""
    p.add_argument("--input-size", type=int, default=None,
                   help="square image side: the model is built for it and the images are "
                        "resized to it (default: the data set's own, 32 for CIFAR and image "
                        "folders); torchvision models keep their ImageNet stem above 64, so "
                        "ImageNet checkpoints want 224")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of the model; must be the data set's (default: the data set's)")


def transfer_args(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The epochs of a transfer (a checkpoint for other classes); ``defaults``: 2 and 8, else
    None (a search tells the flags given from those left out)."""
    p.add_argument("--transfer-head-epochs", type=int, default=2 if defaults else None,
                   help="a checkpoint whose classifier is for other classes gets a new one, "
                        "trained this many epochs alone first (default 2)")
    p.add_argument("--transfer-epochs", type=int, default=8 if defaults else None,
                   help="... then this many epochs with all layers (default 8)")


def inventory_args(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="output format (default table)")


def _search_run_args(p: argparse.ArgumentParser) -> None:
    """How a search runs: trials at once, resources, Ray cluster, storage, run directory."""
    p.add_argument("--budget", type=int, default=None,
                   help="number of trials, seeds and failed ones included (default 50; with "
                        "--resume: the run's own, or this to extend it)")
    p.add_argument("--parallel", type=int, default=None, help="concurrent trials (default: CPUs)")
    p.add_argument("--cpus-per-trial", type=int, default=None,
                   help="CPUs (and torch threads) of each trial (default: CPUs / --parallel)")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPUs of each trial; a fraction shares one GPU (default 0: CPU only)")
    p.add_argument("--address", default=None, help="Ray cluster to join: auto or ray://host:port")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default: SQLite in the run directory)")
    p.add_argument("--storage-path", default=None,
                   help="Ray Tune storage every node reaches (default: RUN/ray)")
    p.add_argument("--study-name", default=None,
                   help="Optuna study (default autorank); drivers on one study share its budget")
    p.add_argument("--heartbeat", type=int, default=None, dest="heartbeat_s",
                   help="seconds between trial heartbeats; 3x silent = driver gone (default 10)")
    p.add_argument("--out", default=None, help="run directory (default runs/<model>-<data>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (an interrupted or killed one included) with "
                        "its saved flags; finished trials are kept, interrupted ones are sampled "
                        "anew. Flags given again may change the budget and how trials run, not "
                        "what they compute")
    p.add_argument("--runner", choices=["ray", "local"], default=None,
                   help="ray (default): Ray Tune; local: in-process, one trial at a time")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")


# The flags of ``autorank search`` that make its configuration (make_config's names). Each
# defaults to None, so that a flag given can be told from one left out (--resume keeps those).
SEARCH_FLAGS = ("model", "dataset", "data_dir", "download", "checkpoint", "space", "objectives",
                "seed", "finetune_steps", "min_steps", "max_steps", "eta", "val_source",
                "baseline_epochs", "input_size", "num_classes", "transfer_head_epochs",
                "transfer_epochs", "budget", "parallel", "cpus_per_trial", "gpus_per_trial",
                "address", "storage", "storage_path", "study_name", "heartbeat_s", "out",
                "runner", "device")


def search_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The search flags given on the command line, by :func:`autorank.config.make_config`'s
    names (``objectives`` as a list); those left out are absent."""
    flags = {k: getattr(args, k) for k in SEARCH_FLAGS if getattr(args, k) is not None}
    objectives = [o for o in flags.pop("objectives", "").split(",") if o]
    if objectives:
        flags["objectives"] = objectives
    return flags


def search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="registered model (`autorank models`; default resnet18)")
    p.add_argument("--dataset", default=None, help=f"{_DATASETS} (default cifar10)")
    p.add_argument("--data-dir", default=None, help="where data sets live ($AUTORANK_DATA_DIR)")
    p.add_argument("--download", action="store_true", default=None,
                   help="let torchvision fetch CIFAR if absent")
    p.add_argument("--checkpoint", default=None,
                   help="trained baseline; without it one is trained first (--baseline-epochs) "
                        "and cached")
    p.add_argument("--space", default=None, help="search-space preset name or YAML file "
                                                 "(default: the preset 'default')")
    p.add_argument("--objectives", default=None,
                   help="comma list after accuracy: params, flops, latency (default: params)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the sampler, the validation split and the fine-tunes (default 0)")
    p.add_argument("--finetune-steps", type=int, default=None,
                   help="one rung: every trial fine-tunes this many steps (no promotions)")
    p.add_argument("--min-steps", type=int, default=None,
                   help="multi-fidelity: steps of the first rung (every trial)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="multi-fidelity: steps of the top rung (the front is judged there)")
    p.add_argument("--eta", type=int, default=None,
                   help="multi-fidelity: the best 1/eta of a rung go on with eta x the steps")
    p.add_argument("--val-source", choices=_VAL_SOURCES, default=None,
                   help="where validation images come from (default auto: the test half for "
                        "checkpoints, else held-out training images)")
    p.add_argument("--baseline-epochs", type=int, default=None,
                   help="epochs of the baseline trained first when no --checkpoint is given "
                        "(default 30)")
    data_size_args(p)
    transfer_args(p, defaults=False)
    _search_run_args(p)


def report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run directory")
    p.add_argument("--html", nargs="?", const="", default=None, metavar="PATH",
                   help="also write a self-contained HTML report (default RUN/report.html)")
    p.add_argument("--storage", default=None,
                   help="the study's storage URL, when the run's saved URL hides a password")


def export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run directory")
    p.add_argument("--trial", type=int, required=True, help="trial number (see `autorank report`)")
    p.add_argument("--out", required=True, help="directory to write (new, empty, or an earlier export)")
    p.add_argument("--finetune-epochs", type=float, default=0,
                   help="fine-tune this many epochs more, distilling from the baseline (default 0)")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx, checked by onnxruntime")
    p.add_argument("--strategy", default=None,
                   help="train the trial's plan from the dense baseline by this recipe instead: "
                        "vbmf-tucker2 (factorize, fine-tune) or admm (ADMM towards the ranks "
                        "first, Yin et al. 2021); needs --finetune-epochs")
    p.add_argument("--admm-steps", type=int, default=200,
                   help="with --strategy admm: training steps of the dense model (default 200)")


def train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a registered model name (see `autorank models`)")
    p.add_argument("--dataset", default="cifar10", help=f"{_DATASETS} (default cifar10)")
    p.add_argument("--data-dir", default=None, help="where data sets live ($AUTORANK_DATA_DIR)")
    p.add_argument("--epochs", type=int, required=True, help="training epochs (>= 1)")
    p.add_argument("--out", default=None, help="checkpoint file (default: the baseline cache)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, split and batches (default 0)")
    p.add_argument("--lr", type=float, default=0.1,
                   help="initial learning rate of the cosine schedule (default 0.1)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--keep-epochs", action="store_true",
                   help="also keep every epoch's weights, each a checkpoint, in <checkpoint>.epochs/")
    data_size_args(p)


def _musco_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("musco (Gusak et al. 2019)")
    g.add_argument("--stages", type=int, default=2,
                   help="compression stages, each factorizing again and fine-tuning (default 2)")
    g.add_argument("--w", type=float, default=0.8,
                   help="weakening factor in [0, 1]: rank R - w (R - r_vbmf); 1 is EVBMF's rank, "
                        "0 the full one (default 0.8)")
    g.add_argument("--target-ratio", type=float, default=None, help="stop at this params ratio")
    g.add_argument("--max-drop", type=float, default=None,
                   help="stop when val accuracy falls more than this below the baseline's")


def _admm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("admm (Yin et al. 2021)")
    g.add_argument("--admm-steps", type=int, default=200,
                   help="training steps of the dense model under the ADMM penalty (default 200)")
    g.add_argument("--format", choices=["tucker2", "tt"], default="tucker2",
                   help="format of the k x k convs (1x1 convs and linears: SVD) (default tucker2)")
    g.add_argument("--ratio", type=float, default=4.0,
                   help="per-layer params ratio of the ranks (default 4.0)")
    g.add_argument("--plan", default=None, help="JSON plan with the ranks (overrides --ratio)")
    g.add_argument("--rho", type=float, default=1.0, help="initial penalty weight (default 1.0)")
    g.add_argument("--rho-growth", type=float, default=1.3,
                   help="rho is multiplied by this at every Z/U update (default 1.3)")
    g.add_argument("--rho-max", type=float, default=20.0, help="rho grows up to this (default 20)")
    g.add_argument("--update-every", type=int, default=10,
                   help="training steps between Z/U updates (default 10)")


def compress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a registered model name (see `autorank models`)")
    p.add_argument("--checkpoint", default=None,
                   help="trained baseline; without it one is trained first (--baseline-epochs) "
                        "and cached")
    data_size_args(p)
    transfer_args(p, defaults=True)
    p.add_argument("--dataset", default="cifar10", help=f"{_DATASETS} (default cifar10)")
    p.add_argument("--data-dir", default=None, help="where data sets live ($AUTORANK_DATA_DIR)")
    p.add_argument("--strategy", required=True, help="vbmf-tucker2, musco or admm")
    p.add_argument("--out", required=True,
                   help="directory for the model (as autorank export writes it) and results")
    p.add_argument("--finetune-steps", type=int, default=200,
                   help="steps of every fine-tune (default 200)")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tune learning rate (default 0.01)")
    p.add_argument("--batch-size", type=int, default=128, help="fine-tune batch size (default 128)")
    p.add_argument("--no-distill", action="store_true", help="fine-tune without the teacher")
    p.add_argument("--bn-batches", type=int, default=20,
                   help="BN recalibration batches (default 20)")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="evaluate on N images only (default: all)")
    p.add_argument("--exclude", default="", help="comma list of layer globs to keep dense")
    p.add_argument("--include-ends", action="store_true",
                   help="factorize the first conv and the classifier too")
    p.add_argument("--val-source", choices=_VAL_SOURCES, default="auto",
                   help="where validation images come from (default auto: the test half for "
                        "checkpoints, else held-out training images)")
    p.add_argument("--baseline-epochs", type=int, default=30,
                   help="epochs of the baseline trained first when no --checkpoint is given "
                        "(default 30)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the validation split and the fine-tunes (default 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    _musco_args(p)
    _admm_args(p)
