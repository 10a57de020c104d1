"""Silent and cryptic cases of issue 24, each now one line naming its cause."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import minilg.convert_cli
from minilg.cli import main
from minilg.errors import CheckpointError
from minilg.training import checkpoint as ckpt

DATA = Path(__file__).parent / "data"


def _official(family: str, tmp_path: Path) -> tuple[Path, Path]:
    """The micro official fixture of ``family`` as a ``.pth`` checkpoint and its config."""
    fixture = DATA / f"{family}_official_micro.safetensors"
    tensors = load_file(str(fixture))
    with safe_open(str(fixture), "pt") as f:
        config = json.loads(f.metadata()["config"])
    state = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    path, cfg = tmp_path / f"{family}.pth", tmp_path / f"{family}.json"
    torch.save({"model": state}, path)
    cfg.write_text(json.dumps(config))
    return path, cfg


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"hello, I am a text file\n", "it is a text file, not a PyTorch checkpoint"),
        (bytes(range(256)) * 8, "not a PyTorch checkpoint of tensors"),
        (b"\x80\x02\xff\xfe" + bytes(range(200, 256)) * 4, "not a PyTorch checkpoint"),
        (b"PK\x03\x04" + b"\x00" * 40, "not a readable PyTorch checkpoint"),
    ],
)
def test_convert_names_an_unreadable_checkpoint_and_never_advises_weights_only_false(
    content: bytes, phrase: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "ckpt.pth"
    bad.write_bytes(content)
    assert main(["convert", "--family", "swin", str(bad), str(tmp_path / "out.safetensors")]) == 2
    err = _error(capsys)
    assert f"cannot read {bad}" in err and phrase in err, err
    assert "weights_only=False" not in err and "weights_only` set to `False" not in err
    assert "codec" not in err


@pytest.mark.parametrize(("family", "given"), [("swin", "focal"), ("focal", "swin"),
                                                ("hat_net", "swin"), ("swin", "hat_net")])
def test_convert_with_the_wrong_family_says_which_it_looks_like(
    family: str, given: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _official(family, tmp_path)
    out = tmp_path / "out.safetensors"
    assert main(["convert", "--family", given, str(path), str(out)]) == 2
    err = _error(capsys)
    assert f"looks like a {family} checkpoint, not {given}: pass --family {family}" in err
    assert not out.exists()


def test_convert_output_errors_name_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, cfg = _official("swin", tmp_path)
    argv = ["convert", "--family", "swin", "--config", str(cfg), str(path)]
    missing = tmp_path / "no" / "such" / "out.safetensors"
    assert main([*argv, str(missing)]) == 2
    assert f"cannot write {missing}: its folder {missing.parent} does not exist" in _error(capsys)
    assert main([*argv, str(tmp_path)]) == 2
    assert f"output {tmp_path} is a folder" in _error(capsys)
    out = tmp_path / "out.safetensors"

    def full_disk(target: str | Path, *args: object) -> None:
        temp = Path(target).parent / f".{Path(target).name}.x1y2.tmp.safetensors"
        raise OSError(errno.ENOSPC, "No space left on device", str(temp))

    monkeypatch.setattr(minilg.convert_cli, "save_weights", full_disk)
    assert main([*argv, str(out)]) == 2
    err = _error(capsys)
    assert f"cannot write {out}: No space left on device" in err and ".tmp" not in err


def test_safetensors_metadata_is_covered_by_the_checksum(tmp_path: Path) -> None:
    """An edited ``img_size`` in a weights file outside its run folder is detected."""
    from minilg.train import load_model
    from minilg.training.checkpoint import save_weights

    model = torch.nn.Linear(4, 2)
    path = tmp_path / "w.safetensors"
    save_weights(path, model, {"model": "swin_mini", "num_classes": "10", "img_size": "32"})
    assert ckpt.read_weights_metadata(path)["img_size"] == "32"
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = data[8:8 + n].replace(b'"img_size":"32"', b'"img_size":"64"')
    assert len(header) == n and header != data[8:8 + n]
    path.write_bytes(data[:8] + header + data[8 + n:])
    with pytest.raises(CheckpointError, match=r"metadata .* do not match their checksum"):
        ckpt.read_weights_metadata(path)
    with pytest.raises(CheckpointError, match="edited after it was written"):
        load_model(path)


def test_a_dangling_symlink_is_skipped_and_counted_like_an_unreadable_image(
    tmp_path: Path,
) -> None:
    from PIL import Image

    from minilg.data import load_subset
    from minilg.data.core import SkippedImagesWarning

    root = tmp_path / "images"
    for split in ("train", "val"):
        for wnid in ("n01", "n02"):
            (root / split / wnid).mkdir(parents=True)
            for j in range(2):
                Image.new("RGB", (20, 20), (60 * j, 0, 0)).save(root / split / wnid / f"{j}.JPEG")
    (root / "train" / "n01" / "gone.JPEG").symlink_to(tmp_path / "nowhere.JPEG")
    with pytest.warns(SkippedImagesWarning, match=r"skipped 1 unreadable image\(s\) of 5 "
                      r"\(e\.g\. n01/gone\.JPEG"):
        ds = load_subset("imagefolder", "train", 16, root=root, cache_dir=tmp_path / "cache")
    assert len(ds) == 4 and ds.skipped == 1


def _loose_weights(tmp_path: Path, name: str = "deit_mini") -> Path:
    from minilg.registry import create_model
    from minilg.training.checkpoint import save_weights

    path = tmp_path / f"{name}.safetensors"
    save_weights(path, create_model(name, num_classes=10, img_size=32),
                 {"model": name, "num_classes": "10", "img_size": "32", "data": "synthetic"})
    return path


class _Loaded(Exception):
    """Raised by the stand-in for load_subset: what eval asked for."""


def _record_load(monkeypatch: pytest.MonkeyPatch) -> None:
    import minilg.training.evaluation as evaluation

    def load(*args: object, **kwargs: object) -> None:
        raise _Loaded(kwargs.get("root"))

    monkeypatch.setattr(evaluation, "load_subset", load)


def test_eval_root_empty_clears_the_runs_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import minilg.training.evaluation as evaluation
    from minilg.training.config import TrainConfig

    weights = _loose_weights(tmp_path)
    config = TrainConfig(model="deit_mini", data="imagenette", root=str(tmp_path)).to_dict()
    monkeypatch.setattr(evaluation, "locate_checkpoint", lambda path: (weights, config))
    _record_load(monkeypatch)
    with pytest.raises(_Loaded) as inherited:
        evaluation.evaluate_checkpoint(weights, device="cpu")
    assert inherited.value.args == (str(tmp_path),)
    with pytest.raises(_Loaded) as cleared:
        evaluation.evaluate_checkpoint(weights, root="", device="cpu")
    assert cleared.value.args == (None,)


def test_eval_of_deit_at_another_resolution_gives_advice_eval_can_follow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = _loose_weights(tmp_path)
    _record_load(monkeypatch)  # refused before any data is loaded
    assert main(["eval", "--checkpoint", str(weights), "--resolution", "64"]) == 2
    err = _error(capsys)
    assert "--resolution: 64 does not fit this model, built for 32 px" in err
    assert "evaluate it without --resolution (it then uses 32)" in err
    assert "create the model" not in err


# ----------------------------------------------------------------------------- bench
def test_bench_refuses_what_exceeds_the_machine_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import minilg.bench.cli as bench_cli

    def never(*args: object) -> None:
        raise AssertionError("measured before the memory estimate refused the run")

    monkeypatch.setattr(bench_cli, "measure", never)
    monkeypatch.setattr(bench_cli, "matmul_peak", never)
    monkeypatch.setattr(bench_cli, "machine_memory", lambda device: 2**20)  # a 1 MiB machine
    out = tmp_path / "bench"
    assert main(["bench", "--families", "swin", "--mixers", "W-MSA", "--sizes", "16", "--batch",
                 "64", "--memory-limit", "1000", "--out", str(out)]) == 2
    err = _error(capsys)
    assert "W-MSA @ 16 (--batch 64): the straightforward version's scores need an estimated " \
           "16 MiB, more than this machine's 1 MiB (cpu)" in err
    assert "lower --memory-limit (now 1000 GiB), --batch or --sizes" in err
    assert not out.exists()


def test_bench_checks_out_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import minilg.bench.cli as bench_cli

    def never(*args: object) -> None:
        raise AssertionError("measured before --out was checked")

    monkeypatch.setattr(bench_cli, "discover_cases", never)
    (tmp_path / "file").write_text("mine")
    assert main(["bench", "--out", str(tmp_path / "file")]) == 2
    assert f"--out {tmp_path / 'file'} is a file, not a folder" in _error(capsys)
    (tmp_path / "bench.md").write_text("mine")
    assert main(["bench", "--out", str(tmp_path)]) == 2
    assert "already holds bench.md, which bench did not write there" in _error(capsys)
    assert (tmp_path / "bench.md").read_text() == "mine"
