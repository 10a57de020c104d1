"""``compare(..., jobs=2)``: models trained in parallel processes give the rows of serial runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from minilg.compare import compare
from minilg.train import TrainConfig

TINY = TrainConfig(
    model_kwargs={"dims": [16, 16, 32, 32], "heads": [1, 1, 2, 2]}, data="match", epochs=1,
    batch_size=32, max_train_samples=64, max_eval_samples=32, threads=1, verbose=False,
)


def test_two_jobs_give_the_rows_of_one_job_in_the_order_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = ["local_control", "swin_mini"]
    serial = compare(models, TINY, tmp_path / "serial")
    parallel = compare(models, dataclasses.replace(TINY, verbose=True), tmp_path / "parallel",
                       jobs=2)
    assert [r["model"] for r in parallel] == models
    for a, b in zip(serial, parallel, strict=True):
        # one thread in both: the same arithmetic, so the same result
        assert [h["val_top1"] for h in a["history"]] == [h["val_top1"] for h in b["history"]]
        assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    progress = capsys.readouterr().out
    assert "[2/2]" in progress and "elapsed" in progress and "left" in progress
    with pytest.raises(ValueError, match="jobs"):
        compare(models, TINY, None, jobs=0)


def test_time_left_counts_the_running_models_as_half_done() -> None:
    from minilg.compare import _time_left

    assert _time_left([2.0], 7, 2) == 6.0  # 6 models' worth of work left, two at a time
    assert _time_left([1.0, 3.0], 3, 1) == 5.0  # one at a time: 2.5 models of 2 minutes
    assert _time_left([1.0], 1, 2) == 0.5  # the last one is running, half done
    assert _time_left([1.0], 0, 2) == 0.0


def test_the_chance_line_gives_chance_and_three_standard_errors() -> None:
    from minilg.compare import _chance_line

    # 3 * sqrt(0.25 / 1000) = 0.04743: 54.7 %
    assert _chance_line(2, 1000) == ("Chance: 50.0 % (2 classes); chance + 3 standard errors on "
                                     "1,000 validation images: 54.7 %.")
    assert _chance_line(10, None) == "Chance: 10.0 % (10 classes)."
