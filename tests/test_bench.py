"""``python -m minilg bench``: functional tests on tiny configurations (timings never asserted)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from minilg import bench, registry
from minilg.attention import WindowAttention

TINY = ["--batch", "1", "--repeats", "1", "--warmup", "0", "--peak-n", "64"]


@pytest.fixture(scope="module")
def swin_cases() -> list[bench.Case]:
    return bench.discover_cases(["swin"])


def test_cases_come_from_the_registry(swin_cases: list[bench.Case]) -> None:
    assert [c.name for c in swin_cases] == ["swin_tiny s1.b0 W-MSA", "swin_tiny s1.b1 SW-MSA"]
    assert [c.dim for c in swin_cases] == [96, 96]
    assert swin_cases[1].mixer.shift == (3, 3)  # type: ignore[union-attr]
    # Every registered family has a canonical model; mini-only families get Swin-T's frame.
    canonical = bench.canonical_models()
    families = {registry.model_entry(n).family for n in registry.list_models()}
    assert set(canonical) == families
    assert canonical["swin"] == ("swin_tiny", {})
    assert canonical["gg"] == ("gg_tiny", {})
    assert all(over == bench.FRAME_OVERRIDES for name, over in canonical.values()
               if registry.model_entry(name).mini)


def test_filters_pick_stages_and_mixers() -> None:
    stage2 = bench.discover_cases(["swin"], ["sw-msa"], stages=[2])
    assert [(c.name, c.dim) for c in stage2] == [("swin_tiny s2.b1 SW-MSA", 192)]
    with pytest.raises(bench.BenchError, match="unknown --families"):
        bench.discover_cases(["nope"])


def test_every_case_agrees_with_the_straightforward_path() -> None:
    """Core and straightforward outputs of every discovered stage-1 mixer (a map that no window
    divides), as the benchmark compares them: same numbers to float tolerance."""
    settings = bench.Settings(torch.device("cpu"), torch.float32, 2, 1, 0, 1)
    for case in bench.discover_cases():
        rows = bench.measure(case, 9, settings, peak_gflops=1.0)
        assert [r.path for r in rows] == list(bench.PATHS)
        assert rows[0].diff < 1e-5, case.name
        assert rows[0].macs == case.mixer.macs(9, 9) and rows[0].tokens == 81


def test_cli_writes_table_csv_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--families", "swin", "--sizes", "12", "8", "16", *TINY, "--out", str(tmp_path)]
    assert bench.cli_bench(argv) == 0
    out = capsys.readouterr().out
    assert "threads 1" in out and "matmul peak (fp32, n=64)" in out
    assert "swin_tiny s1.b1 SW-MSA" in out and "Targets (measured vs target" in out
    with (tmp_path / "bench.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 3 * 2  # cases x sizes x paths
    for column in ("case", "size", "tokens", "path", "macs", "fwd_ms", "fwdbwd_ms", "gflops",
                   "peak_fraction", "fwd_mib", "fwdbwd_mib", "speedup_fwd", "speedup_fwdbwd",
                   "diff", "threads", "batch", "dtype", "device"):
        assert column in rows[0]
    assert [int(r["size"]) for r in rows[:6]] == [8, 8, 12, 12, 16, 16]
    assert all(float(r["diff"]) < 1e-5 for r in rows)
    payload = json.loads((tmp_path / "bench.json").read_text())
    assert payload["environment"]["threads"] == 1
    assert payload["environment"]["matmul_peak_gflops"] > 0
    assert len(payload["rows"]) == 12 and len(payload["rows"][0]["fwd_samples_ms"]) == 1
    # exponents: 8->12, 12->16 and 8->16, per case and path
    assert len(payload["scaling"]) == 2 * 2 * 3
    assert {t["met"] for t in payload["targets"]} == {None}  # map 56 not run, no block memory
    with (tmp_path / "scaling.csv").open() as handle:
        assert {"case", "path", "from", "to", "macs", "fwd", "fwdbwd"} <= set(
            next(csv.DictReader(handle)))
    assert (tmp_path / "bench.png").stat().st_size > 0
    markdown = (tmp_path / "bench.md").read_text().splitlines()
    assert len(markdown) == 2 + 2 * 3 and markdown[2].startswith("| swin_tiny s1.b0 W-MSA | 8 |")
    assert markdown[2].endswith("| - |") and not markdown[3].endswith("| - |")  # exponent


def test_memory_limit_skips_without_attempting(
    swin_cases: list[bench.Case], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case = swin_cases[0]
    small = bench.score_bytes(case.mixer, 1, 8, torch.float32)
    large = bench.score_bytes(case.mixer, 1, 16, torch.float32)
    assert small == 4 * 3 * 49 * 49 * 4 and large == 9 * 3 * 49 * 49 * 4  # windows x heads
    attempted: list[int] = []
    measure = bench.measure

    def spy(case: bench.Case, size: int, *args: object) -> list[bench.Row]:
        attempted.append(size)
        return measure(case, size, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(bench, "measure", spy)
    limit = (small + large) / 2 / 2**30
    argv = ["--families", "swin", "--mixers", "W-MSA", "--sizes", "8", "16", *TINY,
            "--memory-limit", str(limit), "--out", str(tmp_path)]
    assert bench.cli_bench(argv) == 0
    assert attempted == [8]
    out = capsys.readouterr().out
    assert "note: swin_tiny s1.b0 W-MSA @ 16: skipped, straightforward scores need" in out
    assert len(json.loads((tmp_path / "bench.json").read_text())["rows"]) == 2


def test_estimate_falls_back_to_the_full_attention_bound(
    swin_cases: list[bench.Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    mixer = swin_cases[0].mixer
    assert bench.estimated_bytes(mixer, 2, 8, torch.float32) == (2 * 4 * 3 * 49 * 49 * 4, "")

    def no_meta(*args: object) -> int:
        raise NotImplementedError("data-dependent\nshape")

    monkeypatch.setattr(bench, "score_bytes", no_meta)
    size, note = bench.estimated_bytes(mixer, 2, 8, torch.bfloat16)
    assert size == 2 * 3 * 64**2 * 2
    assert note == "full-attention bound (meta trace failed: data-dependent)"


def test_block_memory_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--families", "swin", "--mixers", "W-MSA", "--sizes", "8", *TINY,
            "--block-memory", "--block-batch", "2", "--out", str(tmp_path)]
    assert bench.cli_bench(argv) == 0
    blocks = json.loads((tmp_path / "bench.json").read_text())["block_memory"]
    assert [(b["what"], b["path"]) for b in blocks] == [
        ("swin_tiny s1.b1 block", "core"), ("swin_tiny s1.b1 block", "straightforward"),
        ("swin_tiny s1.b1 mixer", "core"), ("swin_tiny s1.b1 mixer", "straightforward")]
    input_mib = 2 * 56 * 56 * 96 * 4 / 2**20
    assert all(b["input_mib"] == input_mib and b["peak_mib"] > input_mib for b in blocks)
    assert "stage-1 SW block memory, batch 2" in capsys.readouterr().out


def test_cpu_peak_memory_replays_allocations() -> None:
    def two_buffers() -> None:
        a = torch.empty(2**20)  # 4 MiB
        b = torch.empty(2**19)  # 2 MiB while a is alive
        del a, b
        torch.empty(2**20)  # 4 MiB again, after both were freed

    assert bench.cpu_peak_bytes(two_buffers) == 6 * 2**20


def test_scaling_exponents_and_targets() -> None:
    def row(size: int, ms: float, path: str, speedup: float) -> bench.Row:
        tokens = size * size
        return bench.Row("c W-MSA", "swin", "m", 1, 0, "W-MSA", 96, size, tokens, 8, "float32",
                         "cpu", 2, path, 10 * tokens, ms, 0.0, 3 * ms, 0.0, 1.0, 0.6, 0.0, 0.0,
                         speedup, speedup, 0.0)

    rows = [row(s, s * s / 100, p, 1.3 if p == "core" else 1.0)
            for s in (28, 56, 224) for p in bench.PATHS]
    exponents = bench.scaling(rows)
    assert [(e["from"], e["to"]) for e in exponents[:3]] == [(28, 56), (56, 224), (28, 224)]
    assert all(e["fwd"] == pytest.approx(1.0) and e["macs"] == pytest.approx(1.0)
               for e in exponents)
    settings = bench.Settings(torch.device("cpu"), torch.float32, 8, 1, 0, 2)
    targets = [*bench.speedup_targets(rows, settings), bench.exponent_target(rows)]
    assert [t.met for t in targets] == [True, True, True, True]
    assert all(t.note == "" for t in targets)
    slow = [r if r.path != "core" else bench.Row(**{**r.__dict__, "speedup_fwd": 1.1})
            for r in rows]
    assert [t.met for t in bench.speedup_targets(slow, settings)] == [True, False, True]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dtype", "float8"], "invalid choice: 'float8'"),
        (["--sizes", "0"], "--sizes must be positive"),
        (["--families", "nope"], "unknown --families ['nope']"),
        (["--families", "swin", "--mixers", "GG-MSA"], "no mixer matches"),
        (["--device", "mps"], "--device must be cpu or cuda"),
        (["--device", "gpu0"], "is not a device"),
    ],
)
def test_expected_failures_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.cli_bench(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_without_cuda_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.cli_bench(["--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_window_attention_is_the_w_msa_label() -> None:
    assert bench.mixer_label(WindowAttention(8, 2, 4)) == "W-MSA"
    assert bench.mixer_label(WindowAttention(8, 2, 4, shift=2)) == "SW-MSA"
