"""``minilg.compare``: several models under one budget, one table; never another run's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from minilg.cli import main
from minilg.compare import compare, markdown_table
from minilg.errors import ConfigError, RunExistsError
from minilg.train import TrainConfig, train
from minilg.training.rundir import LOCK_FILE

TINY: dict[str, Any] = dict(
    model="swin_mini", model_kwargs={"dims": [16, 16, 32, 32], "heads": [1, 1, 2, 2]},
    batch_size=32, max_train_samples=128, max_eval_samples=64, threads=1, verbose=False,
)


def tiny(**overrides: Any) -> TrainConfig:
    return TrainConfig(**{**TINY, **overrides})


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


def test_compare_trains_each_model_and_writes_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no_such_model"):  # checked before any training
        compare(["swin_mini", "no_such_model"], tiny(epochs=1), tmp_path)
    assert not (tmp_path / "swin_mini").exists()
    rows = compare(["swin_mini"], tiny(epochs=1, max_train_samples=64), tmp_path)
    assert [r["model"] for r in rows] == ["swin_mini"]
    assert rows[0]["MMACs"] > 0 and rows[0]["train_img_per_s"] > 0
    for name in ("compare.csv", "compare.md", "compare.json", "compare.png"):
        assert (tmp_path / name).is_file(), name
    assert markdown_table(rows).splitlines()[2].startswith("| swin_mini |")
    # a second comparison into the same folder replaces the first instead of failing
    assert len(compare(["swin_mini"], tiny(epochs=1, max_train_samples=64), tmp_path)) == 1


def test_compare_never_replaces_a_run_it_did_not_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standalone = tmp_path / "cmp" / "swin_mini"
    train(tiny(out=str(standalone), epochs=2, stop_after=1, max_train_samples=96,
               max_eval_samples=32))
    before = _files(standalone)
    with pytest.raises(RunExistsError, match="compare did not create"):
        compare(["swin_mini"], tiny(epochs=1), tmp_path / "cmp")
    capsys.readouterr()
    code = main(["compare", "--models", "swin_mini", "--out", str(tmp_path / "cmp"),
                 "--model-kwargs", '{"dims": [16, 16, 32, 32], "heads": [1, 1, 2, 2]}'])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "compare did not create" in err
    assert _files(standalone) == before
