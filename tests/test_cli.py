"""The command line (:func:`minilg.cli.main`, run in-process): every verb gets its parser and
help, a train-then-eval round trip, and every bad input as one ``error:`` line on stderr with exit
code 2.

For the bad-input cases data loading is replaced by a function that fails the test
(``no_data``), so a case passes only if the value is refused *before* any data is loaded or any
compute starts.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import minilg.train
import minilg.training.splits
from minilg.cli import VERBS, main
from minilg.training.config import TrainConfig


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("data was loaded before the bad option was refused")

    monkeypatch.setattr(minilg.training.splits, "load_subset", refuse)


# ----------------------------------------------------------------------------- every verb
def test_info_prints_ours_beside_published(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "swin_*"]) == 0
    out = capsys.readouterr().out
    assert "MACs = multiply-accumulates" in out
    assert "| swin_tiny | 224 | 28.29 | 4.491 | 28.3 | 4.5 | -0.0% | -0.2% |" in out


def test_list_prints_registered_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "*mini*"]) == 0
    names = capsys.readouterr().out.split()
    assert "swin_mini" in names and "gg_mini" in names and "swin_tiny" not in names


# the verbs whose modules this file covers (bench's: test_bench.py)
@pytest.mark.parametrize("verb", ["list", "info", "train", "eval", "compare", "convert",
                                  "coursework"])
def test_every_verb_gets_its_parser_and_help(
    verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m minilg {verb} ")
    assert VERBS[verb].description.split()[0] in out
    assert main(["--help"]) == 0
    assert f"  {verb} " in capsys.readouterr().out


def test_train_help_comes_from_the_config_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["help"], f.name
        assert " ".join(f.metadata["help"].split()) in out, f.name
        assert "--" + f.name.replace("_", "-") in out, f.name


# ----------------------------------------------------------------------------- train, then eval
TINY_KWARGS = {"dims": [16, 16, 32, 32], "heads": [1, 1, 2, 2]}


def test_cli_train_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "run")
    argv = [
        "train", "--model", "swin_mini", "--model-kwargs", json.dumps(TINY_KWARGS),
        "--epochs", "2", "--stop-after", "1", "--batch-size", "32", "--max-train-samples", "64",
        "--max-eval-samples", "64", "--threads", "1", "--out", out, "--no-verbose",
    ]
    assert main(argv) == 0
    assert (tmp_path / "run" / "checkpoints" / "LATEST").read_text() == "epoch-0001\n"
    assert (tmp_path / "run" / "checkpoints" / "epoch-0001" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["epochs"] == 2 and saved["model_kwargs"] == TINY_KWARGS
    assert main(["train", "--out", out]) == 2  # refuses to overwrite
    assert main(["train", "--out", out, "--resume", "--no-verbose"]) == 0  # its saved config
    capsys.readouterr()
    assert main(["eval", "--checkpoint", out, "--max-eval-samples", "64", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    assert metrics["top1"] == pytest.approx(history[-1]["val_top1"])
    assert metrics["n"] == 64


def test_unavailable_data_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", "imagenette", "--root", str(tmp_path / "missing"), "--out",
                 "none"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: ")


# ----------------------------------------------------------------------------- bad input


# (arguments after "train", a fragment the error line must contain)
TRAIN_CASES: list[tuple[list[str], str]] = [
    (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["--epochs", "-3"], "--epochs must be an integer >= 1, got -3"),
    (["--epochs", "2.5"], "argument --epochs: invalid int value: '2.5'"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["--eval-every", "0"], "--eval-every must be an integer >= 1, got 0"),
    (["--eval-batch-size", "-1"], "--eval-batch-size must be an integer >= 1, got -1"),
    (["--threads", "-1"], "--threads must be an integer >= 0, got -1"),
    (["--resolution", "0"], "--resolution must be an integer >= 8, got 0"),
    (["--resolution", "12"], "--resolution must be >= 16 for the synthetic data, got 12"),
    (["--max-train-samples", "-5"], "--max-train-samples must be an integer >= 1, got -5"),
    (["--max-train-samples", "0"], "--max-train-samples must be an integer >= 1, got 0"),
    (["--max-eval-samples", "-1"], "--max-eval-samples must be an integer >= 1, got -1"),
    (["--stop-after", "0"], "--stop-after must be an integer >= 1, got 0"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--min-lr", "-0.00001"], "--min-lr must be a finite number in [0, 0.001], got -1e-05"),
    (["--min-lr", "0.1"], "--min-lr must be a finite number in [0, 0.001], got 0.1"),
    (["--weight-decay", "-0.1"], "--weight-decay must be a finite number >= 0, got -0.1"),
    (["--warmup-epochs", "-1"], "--warmup-epochs must be a finite number in [0, 10], got -1.0"),
    (["--warmup-epochs", "11"], "--warmup-epochs must be a finite number in [0, 10], got 11.0"),
    (["--clip-grad", "-1"], "--clip-grad must be a finite number >= 0, got -1.0"),
    (["--label-smoothing", "1"], "--label-smoothing must be a finite number in [0, 1), got 1.0"),
    (["--label-smoothing", "-0.1"], "--label-smoothing must be a finite number in [0, 1)"),
    (["--mixup", "-0.2"], "--mixup must be a finite number >= 0, got -0.2"),
    (["--cutmix", "inf"], "--cutmix must be a finite number >= 0, got inf"),
    (["--drop-path", "1"], "--drop-path must be a finite number in [0, 1), got 1.0"),
    (["--crop-scale", "0,1"], "--crop-scale must be (lo, hi) with 0 < lo <= hi <= 1, got (0.0, 1"),
    (["--crop-scale", "0.9,0.5"], "--crop-scale must be (lo, hi) with 0 < lo <= hi <= 1"),
    (["--crop-scale", "0.5,2"], "--crop-scale must be (lo, hi) with 0 < lo <= hi <= 1"),
    (["--crop-scale", "big"], "argument --crop-scale: must be LO,HI (e.g. 0.35,1), none or auto"),
    (["--amp", "fp8"], "argument --amp: invalid choice: 'fp8'"),
    (["--device", "gpu"], "--device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    (["--device", "cuda:99"], "--device "),
    (["--data", "cifar-7"], "--data: unknown subset 'cifar-7'"),
    (["--model", "swin_mni"], "--model: unknown model name 'swin_mni'. Did you mean swin_mini"),
    (["--model-kwargs", "[1, 2]"], "argument --model-kwargs: must be a JSON object"),
    (["--model-kwargs", "{depths: 1}"], "argument --model-kwargs: not valid JSON"),
    (["--model-kwargs", '{"img_size": 64}'], "--model-kwargs: must not set 'img_size': use"),
    (["--model-kwargs", '{"num_classes": 3}'], "--model-kwargs: must not set 'num_classes'"),
    (["--model-kwargs", '{"drop_path_rate": 0.2}'], "--model-kwargs: must not set 'drop_path_r"),
    (["--model-kwargs", '{"no_such_option": 1}'], "--model-kwargs: swin_mini rejects"),
    (["--bogus-flag", "1"], "unrecognized arguments: --bogus-flag 1"),
]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def _assert_one_line(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.endswith("\n"), repr(err)
    assert err.count("\n") == 1, repr(err)  # exactly one line
    assert fragment in err, err


@pytest.mark.usefixtures("no_data")
@pytest.mark.parametrize(
    ("args", "fragment"), TRAIN_CASES, ids=[" ".join(a) for a, _ in TRAIN_CASES]
)
def test_train_option_out_of_range(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, err = _run(["train", *args, "--out", str(tmp_path / "run")], capsys)
    _assert_one_line(code, err, fragment)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.usefixtures("no_data")
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["train", "--device", "cuda", "--out", "none"], capsys)
    _assert_one_line(code, err, "--device asks for CUDA, but this PyTorch")
    assert "use cpu or auto, got 'cuda'" in err


@pytest.mark.usefixtures("no_data")
def test_out_is_a_file_or_unwritable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    code, err = _run(["train", "--out", str(a_file)], capsys)
    _assert_one_line(code, err, f"--out: {a_file} is a file, not a folder")
    code, err = _run(["train", "--out", str(a_file / "run")], capsys)
    _assert_one_line(code, err, f"--out: cannot write to {a_file / 'run'}")
    assert a_file.read_text() == "mine"


@pytest.mark.usefixtures("no_data")
def test_resume_with_nothing_to_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["train", "--resume", "--out", str(tmp_path)], capsys)
    _assert_one_line(code, err, f"nothing to resume in {tmp_path}: it holds no checkpoint")
    code, err = _run(["train", "--resume", "--out", "none"], capsys)
    _assert_one_line(code, err, "--resume: needs an out folder to resume from")


EVAL_CASES: list[tuple[list[str], str]] = [
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["--max-eval-samples", "-2"], "--max-eval-samples must be an integer >= 1, got -2"),
    (["--resolution", "0"], "--resolution must be an integer >= 8, got 0"),
    (["--amp", "half"], "argument --amp: invalid choice: 'half'"),
]


@pytest.mark.usefixtures("no_data")
@pytest.mark.parametrize(("args", "fragment"), EVAL_CASES, ids=[" ".join(a) for a, _ in EVAL_CASES])
def test_eval_option_out_of_range(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, err = _run(["eval", "--checkpoint", str(tmp_path), *args], capsys)
    _assert_one_line(code, err, fragment)


@pytest.mark.usefixtures("no_data")
def test_eval_missing_and_foreign_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(["eval", "--checkpoint", str(tmp_path / "nowhere")], capsys)
    _assert_one_line(code, err, f"{tmp_path / 'nowhere'} does not exist")
    code, err = _run(["eval", "--checkpoint", str(tmp_path)], capsys)
    _assert_one_line(code, err, f"no checkpoint in {tmp_path}")
    foreign = tmp_path / "photo.safetensors"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    code, err = _run(["eval", "--checkpoint", str(foreign)], capsys)
    _assert_one_line(code, err, "is not a safetensors file")
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))  # valid, but not a minilg checkpoint
    code, err = _run(["eval", "--checkpoint", str(other)], capsys)
    _assert_one_line(code, err, "has no minilg metadata")
    code, err = _run(["eval", "--checkpoint", str(other), "--device", "gpu"], capsys)
    _assert_one_line(code, err, "--device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'")


COMPARE_CASES: list[tuple[list[str], str]] = [
    (["--models", ","], "--models: must name at least one model"),
    (["--models", "swin_mini,swin_mini"], "--models: lists swin_mini more than once"),
    (["--models", "swin_mini,nope_mini"], "--models: nope_mini: "),
    (["--models", "swin_mini", "--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["--models", "swin_mini", "--stop-after", "1"], "unrecognized arguments: --stop-after"),
    # an override one model accepts and the other rejects: named, before anything trains
    (["--models", "swin_mini,deit_mini", "--model-kwargs", '{"window": 4}'],
     "--models: deit_mini: "),
]


@pytest.mark.usefixtures("no_data")
@pytest.mark.parametrize(
    ("args", "fragment"), COMPARE_CASES, ids=[" ".join(a) for a, _ in COMPARE_CASES]
)
def test_compare_checks_every_model_first(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, err = _run(["compare", *args, "--out", str(tmp_path / "cmp")], capsys)
    _assert_one_line(code, err, fragment)
    assert not (tmp_path / "cmp" / "swin_mini").exists()  # nothing trained


@pytest.mark.usefixtures("no_data")
def test_list_and_info_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["list", "zzz*"], capsys)
    _assert_one_line(code, err, "no registered model matches 'zzz*'")
    code, err = _run(["info", "zzz*"], capsys)
    _assert_one_line(code, err, "no registered model matches 'zzz*'")
    code, err = _run(["info", "--bogus"], capsys)
    _assert_one_line(code, err, "unrecognized arguments: --bogus")
    code, err = _run(["trian"], capsys)
    _assert_one_line(code, err, "unknown command 'trian'; did you mean 'train'?")


@pytest.mark.usefixtures("no_data")
def test_unexpected_errors_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("a bug, not a user error")

    monkeypatch.setattr(minilg.train, "check_model", bug)
    with pytest.raises(ZeroDivisionError):
        main(["train", "--out", "none"])


@pytest.mark.usefixtures("no_data")
def test_ctrl_c_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                            ) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(minilg.train, "check_model", interrupted)
    code, err = _run(["train", "--out", "none"], capsys)
    assert code == 130 and err == (
        "error: interrupted; a run keeps its last complete checkpoint (--resume)\n"
    )
