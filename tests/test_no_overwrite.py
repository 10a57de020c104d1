"""No command deletes or overwrites what a user made (issue 24's five losses).

Each test reproduces one loss that main at a6bbf9e had (the test fails there: the edit, the
instructor notebook, the official checkpoint, the standalone run or the checkpoint is gone) and
shows what happens now: a one-line refusal with the user's bytes untouched, or, for a checkpoint
whose ``LATEST`` pointer is missing, the checkpoint recovered and named.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import minilg.compare
from minilg.cli import main
from minilg.compare import compare
from minilg.coursework import annotate
from minilg.errors import RunExistsError
from minilg.train import TrainConfig, TrainResult
from minilg.training import checkpoint as ckpt

DATA = Path(__file__).parent / "data"


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the run lock aside) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".minilg.lock"}


def _one_error_line(capsys: pytest.CaptureFixture[str], *phrases: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for phrase in phrases:
        assert phrase in err, err
    return err


# ----------------------------------------------------------------------------- coursework
def toy_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("def area(r):\n    ### BEGIN SOLUTION\n    return 3.14 * r * r\n"
                                  "    ### END SOLUTION"),
        nbformat.v4.new_code_cell("# Self-check\nassert area(1) == 3.14"),
    ]
    annotate(nb, "01")
    return nb


def test_coursework_keeps_a_students_edits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "01_toy.ipynb", tmp_path / "student"
    nbformat.write(toy_notebook(), source)
    assert main(["coursework", str(source), "--out", str(out)]) == 0
    assert main(["coursework", str(source), "--out", str(out)]) == 0  # unedited: regenerated
    student = out / "01_toy.ipynb"
    nb = nbformat.read(student, as_version=4)
    nb.cells[0].source = nb.cells[0].source.replace("...", "return 3.14 * r * r  # mine")
    nbformat.write(nb, student)
    edited = student.read_bytes()
    capsys.readouterr()
    assert main(["coursework", str(source), "--out", str(out)]) == 2
    _one_error_line(capsys, f"{student} was edited since it was written", "--force")
    assert student.read_bytes() == edited
    # --force replaces it: regenerating student versions is a normal wish
    assert main(["coursework", str(source), "--out", str(out), "--force"]) == 0
    assert "# mine" not in student.read_text()


def test_coursework_never_replaces_a_notebook_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    source = notebooks / "01_toy.ipynb"
    nbformat.write(toy_notebook(), source)
    instructor = source.read_bytes()
    for out, force in [(notebooks, []), (tmp_path / "." / "notebooks", ["--force"])]:
        assert main(["coursework", str(source), "--out", str(out), *force]) == 2
        _one_error_line(capsys, "is the folder of the instructor notebooks")
    assert source.read_bytes() == instructor
    # another folder holding a notebook of the same name that the tool did not write
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(source, other / source.name)
    for force in ([], ["--force"]):
        assert main(["coursework", str(source), "--out", str(other), *force]) == 2
        _one_error_line(capsys, "is not a student version this command wrote")
    assert (other / source.name).read_bytes() == instructor


def test_coursework_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, out = tmp_path / "01_toy.ipynb", tmp_path / "notes.txt"
    nbformat.write(toy_notebook(), source)
    out.write_text("mine")
    assert main(["coursework", str(source), "--out", str(out)]) == 2
    _one_error_line(capsys, f"--out {out} is a file, not a folder")
    assert out.read_text() == "mine"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("def f():\n    return 1\n    ### END SOLUTION",
         "cell 0: ### END SOLUTION on line 3 without a ### BEGIN SOLUTION before it"),
        ("def f():\n    ### BEGIN SOLUTION\n    return 1",
         "cell 0: ### BEGIN SOLUTION on line 2 without an ### END SOLUTION after it"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n### END SOLUTION",
         "cell 0: nested solution markers (### BEGIN SOLUTION on line 2 inside the one on "
         "line 1)"),
    ],
)
def test_unmatched_or_nested_markers_name_notebook_and_cell(
    source: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = toy_notebook()
    nb.cells[0].source = source
    path = tmp_path / "01_toy.ipynb"
    nbformat.write(nb, path)
    assert main(["coursework", str(path), "--out", str(tmp_path / "student")]) == 2
    _one_error_line(capsys, f"01_toy.ipynb {problem}")
    assert not (tmp_path / "student" / "01_toy.ipynb").exists()


# ----------------------------------------------------------------------------- convert
def _official_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    tensors = load_file(str(DATA / "swin_official_micro.safetensors"))
    from safetensors import safe_open

    with safe_open(str(DATA / "swin_official_micro.safetensors"), "pt") as f:
        config = json.loads(f.metadata()["config"])
    state = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    ckpt_path, cfg_path = tmp_path / "official.pth", tmp_path / "cfg.json"
    torch.save({"model": state}, ckpt_path)
    cfg_path.write_text(json.dumps(config))
    return ckpt_path, cfg_path


def test_convert_never_overwrites_its_input_or_a_file_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, cfg = _official_checkpoint(tmp_path)
    original = source.read_bytes()
    argv = ["convert", "--family", "swin", "--config", str(cfg), str(source)]
    for force in ([], ["--force"]):  # the output is the input: the official checkpoint
        assert main([*argv, str(source), *force]) == 2
        _one_error_line(capsys, f"output {source} is the input checkpoint")
        assert main([*argv, str(tmp_path / "." / source.name), *force]) == 2
        _one_error_line(capsys, "is the input checkpoint")
    assert source.read_bytes() == original
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"a user's file")
    for force in ([], ["--force"]):
        assert main([*argv, str(mine), *force]) == 2
        _one_error_line(capsys, f"output {mine} already exists and convert did not write it")
    assert mine.read_bytes() == b"a user's file"
    # its own output: refused without --force, replaced with it
    out = tmp_path / "out.safetensors"
    assert main([*argv, str(out)]) == 0
    written = out.read_bytes()
    capsys.readouterr()
    assert main([*argv, str(out)]) == 2
    _one_error_line(capsys, f"output {out} already exists: pass --force to replace it")
    assert out.read_bytes() == written
    assert main([*argv, str(out), "--force"]) == 0


# ----------------------------------------------------------------------------- compare
def _fake_result(cfg: TrainConfig) -> TrainResult:
    history = [{"epoch": 1, "train_images_per_s": 1.0, "val_top1": 50.0}]
    return TrainResult(nn.Linear(2, 2), history, cfg, None, {"num_classes": 2})


def test_compare_claims_each_folder_when_it_reaches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``train`` run that finishes in a later model's folder while compare trains an earlier
    model is refused at the moment compare claims that folder, never deleted."""
    standalone = tmp_path / "cmp" / "window_mini"

    def train_meanwhile(cfg: TrainConfig) -> TrainResult:
        if cfg.model == "deit_mini":  # meanwhile, a user's train run finishes in window_mini/
            (standalone / "checkpoints" / "epoch-0001").mkdir(parents=True)
            (standalone / "checkpoints" / "LATEST").write_text("epoch-0001\n")
            (standalone / "config.json").write_text('{"model": "window_mini"}')
            (standalone / "metrics.csv").write_text("epoch\n1\n")
        return _fake_result(cfg)

    monkeypatch.setattr(minilg.compare, "train", train_meanwhile)
    monkeypatch.setattr(minilg.compare, "model_macs", lambda model, res: 1.0)
    with pytest.raises(RunExistsError, match="window_mini holds a run that compare did not"):
        compare(["deit_mini", "window_mini"], TrainConfig(verbose=False), tmp_path / "cmp")
    assert _files(standalone) == {
        "checkpoints/LATEST": b"epoch-0001\n", "config.json": b'{"model": "window_mini"}',
        "metrics.csv": b"epoch\n1\n",
    }


# ----------------------------------------------------------------------------- LATEST missing
TINY: dict[str, Any] = dict(
    model="swin_mini", model_kwargs={"dims": [16, 16, 32, 32], "heads": [1, 1, 2, 2]},
    epochs=2, stop_after=1, batch_size=32, max_train_samples=64, max_eval_samples=32,
    threads=1, verbose=False,
)


def test_a_complete_checkpoint_without_latest_is_recovered_never_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from minilg.train import train

    out = tmp_path / "run"
    train(TrainConfig(**TINY, out=str(out)))
    (out / "checkpoints" / "LATEST").unlink()
    before = _files(out / "checkpoints")
    assert list(before) == [f"epoch-0001/{n}" for n in sorted(
        (ckpt.MANIFEST_FILE, ckpt.WEIGHTS_FILE, ckpt.STATE_FILE))]
    capsys.readouterr()
    # eval finds it (and writes nothing)
    assert main(["eval", "--checkpoint", str(out), "--json", "--max-eval-samples", "32"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["n"] == 32
    assert "LATEST is missing; using epoch-0001, the newest complete checkpoint" in captured.err
    assert _files(out / "checkpoints") == before
    # a fresh train into the folder: LATEST recovered, the run refused, the checkpoint kept
    argv = ["train", "--model", "swin_mini", "--model-kwargs", json.dumps(TINY["model_kwargs"]),
            "--epochs", "2", "--batch-size", "32", "--max-train-samples", "64", "--threads", "1",
            "--out", str(out), "--no-verbose"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "LATEST was missing; it names epoch-0001 again" in err
    assert err.splitlines()[-1].startswith("error: ") and "already holds a checkpoint" in err
    assert _files(out / "checkpoints") == {**before, "LATEST": b"epoch-0001\n"}
    assert ckpt.latest_checkpoint(out) == out / "checkpoints" / "epoch-0001"


# ----------------------------------------------------------------------------- every verb
def _user_files(folder: Path, *names: str) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(f"a user's {name}\n".encode())
    return _files(folder)


def _trained_run(tmp_path: Path) -> Path:
    from minilg.train import train

    out = tmp_path / "run"
    train(TrainConfig(**TINY, out=str(out)))
    return out


def _case_train(tmp_path: Path) -> tuple[list[str], Path, str]:
    out = tmp_path / "mine"
    _user_files(out, "config.json", "metrics.csv", "notes.txt")
    return (["train", "--model", "swin_mini", "--max-train-samples", "64", "--out", str(out),
             "--no-verbose"], out, "which no minilg run wrote there")


def _case_compare(tmp_path: Path) -> tuple[list[str], Path, str]:
    out = tmp_path / "mine"
    _user_files(out, "compare.md")
    return (["compare", "--models", "swin_mini", "--out", str(out)], out,
            "which compare did not write there")


def _case_convert(tmp_path: Path) -> tuple[list[str], Path, str]:
    (tmp_path / "in").mkdir()
    source, cfg = _official_checkpoint(tmp_path / "in")
    out = tmp_path / "mine"
    _user_files(out, "out.safetensors")
    return (["convert", "--family", "swin", "--config", str(cfg), str(source),
             str(out / "out.safetensors"), "--force"], out, "convert did not write it")


def _case_coursework(tmp_path: Path) -> tuple[list[str], Path, str]:
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "01_toy.ipynb"
    nbformat.write(toy_notebook(), source)
    out = tmp_path / "mine"
    _user_files(out, "01_toy.ipynb")
    return (["coursework", str(source), "--out", str(out), "--force"], out,
            "is not a student version this command wrote")


def _case_bench(tmp_path: Path) -> tuple[list[str], Path, str]:
    out = tmp_path / "mine"
    _user_files(out, "bench.csv", "bench.md")
    return (["bench", "--families", "swin", "--sizes", "8", "--out", str(out)], out,
            "bench did not write")


# verb -> a command line with an existing output it did not create (None: the verb writes no
# file; it runs in a folder of a user's files, which must stay as they were)
REFUSALS = {"train": _case_train, "compare": _case_compare, "convert": _case_convert,
            "coursework": _case_coursework, "bench": _case_bench}
WRITES_NOTHING = {"list": ["list"], "info": ["info", "swin_mini"], "eval": ["eval"]}


def test_every_verb_is_walked() -> None:
    from minilg.cli import VERBS

    assert set(REFUSALS) | set(WRITES_NOTHING) == set(VERBS)


@pytest.mark.parametrize("verb", sorted(REFUSALS))
def test_every_verb_refuses_an_output_it_did_not_create(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, folder, phrase = REFUSALS[verb](tmp_path)
    before = _files(folder)
    capsys.readouterr()
    assert main(argv) == 2
    _one_error_line(capsys, phrase)
    assert _files(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(before)  # nothing added either


@pytest.mark.parametrize("verb", sorted(WRITES_NOTHING))
def test_verbs_without_outputs_write_nothing(
    verb: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = list(WRITES_NOTHING[verb])
    folder = tmp_path / "cwd"
    if verb == "eval":
        folder = _trained_run(tmp_path)
        argv += ["--checkpoint", str(folder), "--max-eval-samples", "32"]
    _user_files(folder, "notes.txt")
    before = _files(folder)
    monkeypatch.chdir(folder)
    assert main(argv) == 0
    assert _files(folder) == before


def test_train_never_writes_into_its_data_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "imagenette2-160"
    (data / "train").mkdir(parents=True)
    for out in (data, data / "train" / "runs"):
        assert main(["train", "--data", "imagenette", "--root", str(data), "--out", str(out),
                     "--no-verbose"]) == 2
        _one_error_line(capsys, "is inside the data folder --root")
    assert sorted(p.name for p in data.rglob("*")) == ["train"]
