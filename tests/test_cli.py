"""The CLI: bad input is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from autorank.cli import main
from autorank.errors import UserError


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["search", "--budget", "0"], "--budget must be a positive number of trials, got 0"),
        (["search", "--budget", "x"], "invalid int value: 'x'"),
        (["search", "--model", "nope", "--budget", "2"], "unknown model 'nope'; expected one of"),
        (["search", "--model", "tiny_cnn", "--dataset", "mnist"], "unknown data set 'mnist'"),
        (["search", "--objectives", "speed"], "unknown objective 'speed'"),
        (["search", "--space", "nope"], "unknown search space 'nope'"),
        (["search", "--checkpoint", "/no/such.pt"], "checkpoint '/no/such.pt' not found"),
        (["search", "--runner", "spark"], "invalid choice: 'spark'"),
        (["inventory", "--model", "resnet20", "--checkpoint", "/no/such.pt"], "not found"),
        (["train", "--model", "tiny_cnn", "--dataset", "digits", "--epochs", "0"], "--epochs must be"),
    ],
)
def test_bad_input_is_one_line_and_status_2(argv: list[str], pattern: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(argv, capsys)
    assert code == 2
    assert pattern in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written for bad input


def test_resume_without_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["search", "--model", "tiny_cnn", "--dataset", "digits", "--resume",
                        "--out", str(tmp_path)], capsys)
    assert code == 2 and "holds no autorank run" in err


def test_debug_shows_the_traceback() -> None:
    with pytest.raises(UserError, match="--budget"):
        main(["--debug", "search", "--budget", "0"])


def test_inventory_and_listings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["inventory", "--model", "tiny_cnn", "--format", "csv"], capsys)
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.startswith("layer,type,weight_shape,params,mflops,vbmf_rank")
    assert len(rows) >= 3
    code, out, _ = run(["methods"], capsys)
    assert code == 0 and "tucker2" in out and "('r_in', 'r_out')" in out
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "resnet20" in out.split()


def test_python_m_autorank_works() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "autorank", "methods"], capture_output=True,
                          text=True, check=True)
    assert "spatial_svd" in done.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"autorank {version('autorank')}"


def test_every_option_of_every_command_has_help() -> None:
    import argparse

    from autorank.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}"
               for name, sub in commands.choices.items() for action in sub._actions
               if not action.help]
    assert missing == []
    assert {"search", "train", "compress", "export", "report"} <= set(commands.choices)
    search_help = commands.choices["search"].format_help()
    assert "(default 30)" in search_help  # the baseline epochs trained when no --checkpoint


def test_help_and_models_answer_without_torch() -> None:
    # `--help` and `models` stay well under a second: they must not import torch (or Ray)
    import subprocess
    import sys

    code = ("import sys\nfrom autorank.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy import'\n")
    for argv in (["models"], ["search", "--help"], ["--help"]):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
        assert done.returncode == 0, (argv, done.stderr)
        assert "usage" in done.stdout or "resnet20" in done.stdout, argv
    done = subprocess.run([sys.executable, "-m", "autorank", "models"], capture_output=True,
                          text=True, check=True)
    assert "resnet20" in done.stdout.split()


def test_model_catalog_is_the_registry() -> None:
    from autorank._catalog import MODELS
    from autorank.models import get_model_spec, list_models

    assert sorted(MODELS) == list_models()
    assert {name: get_model_spec(name).family for name in list_models()} == MODELS


def test_more_bad_input_is_one_line_and_leaves_nothing(tmp_path: Path, tiny_checkpoint: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # a text file as checkpoint, a negative seed, a GPU that is not there: exit 2, one line,
    # no run directory; --debug after the command shows the traceback instead
    text = tmp_path / "notes.txt"
    text.write_text("hi\n")
    base = ["search", "--model", "tiny_cnn", "--dataset", "digits", "--space", "tiny"]
    for extra, words in ((["--checkpoint", str(text)], "is not a PyTorch checkpoint"),
                         (["--checkpoint", str(tiny_checkpoint), "--seed", "-1"], "--seed"),
                         (["--checkpoint", str(tiny_checkpoint), "--gpus-per-trial", "1"],
                          "no GPU is visible")):
        out = tmp_path / "run"
        code, _, err = run([*base, *extra, "--out", str(out)], capsys)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists(), extra
    with pytest.raises(UserError):
        main([*base, "--checkpoint", str(text), "--out", str(tmp_path / "run"), "--debug"])


def test_train_keeps_every_epoch_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "base.pt"
    code, printed, _ = run(["train", "--model", "tiny_cnn", "--dataset", "synthetic", "--epochs",
                            "2", "--out", str(out), "--keep-epochs", "--device", "cpu"], capsys)
    assert code == 0 and printed.split()[-1] == str(out)
    assert sorted(p.name for p in (tmp_path / "base.pt.epochs").iterdir()) == [
        "epoch-001.pt", "epoch-002.pt"]
