"""``python -m minilg bench``: functional tests on tiny configurations (timings never asserted)."""

from __future__ import annotations

import argparse
import csv
import functools
import json
import shlex
from pathlib import Path

import pytest
import torch

from minilg import bench, registry
from minilg.attention import WindowAttention
from minilg.attention.scopes import scope
from minilg.bench import cli as bench_cli
from minilg.bench import memory as bench_memory
from minilg.bench import targets as bench_targets
from minilg.cli import main
from minilg.errors import MinilgError

TINY = ["--batch", "1", "--rounds", "1", "--warmup", "0", "--peak-n", "64"]


@pytest.fixture(scope="module")
def swin_cases() -> list[bench.Case]:
    return bench.discover_cases(["swin"])


def _bench_cli(argv: list[str]) -> int:
    """``python -m minilg bench ARGV`` through the command line (one ``error:`` line, exit 2)."""
    return main(["bench", *argv])


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


def test_every_case_agrees_with_the_plain_and_straightforward_paths() -> None:
    """Core, plain and straightforward outputs of every discovered stage-1 mixer and extra case
    (a map that no window divides), as the benchmark compares them: same numbers to float
    tolerance."""
    settings = bench.Settings(torch.device("cpu"), torch.float32, 2, 1, 0, 1)
    for case in bench.discover_cases(extras=True):
        rows = bench.measure(case, 9, settings, peak_n=16)
        assert [r.path for r in rows] == list(bench.PATHS)
        assert all(r.diff < 1e-5 for r in rows), case.name
        assert rows[0].diff == max(rows[1].diff, rows[2].diff)
        assert rows[0].macs == case.mixer.macs(9, 9) and rows[0].tokens == 81


def test_cli_writes_table_csv_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--families", "swin", "--sizes", "12", "8", "16", *TINY, "--out", str(tmp_path)]
    assert _bench_cli(argv) == 0
    out = capsys.readouterr().out
    assert "threads 1" in out and "matmul peak (fp32, n=64)" in out
    assert "swin_tiny s1.b1 SW-MSA" in out and "Targets (measured vs target" in out
    with (tmp_path / "bench.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 3 * 3  # cases x sizes x paths
    for column in ("case", "size", "tokens", "path", "macs", "fwd_ms", "fwdbwd_ms", "gflops",
                   "peak_fraction", "fwd_mib", "fwdbwd_mib", "speedup_fwd", "speedup_fwdbwd",
                   "speedup_fwd_iqr", "speedup_fwdbwd_iqr", "vs_straightforward_fwd",
                   "vs_straightforward_fwdbwd", "peak_gflops", "variant",
                   "diff", "threads", "batch", "dtype", "device"):
        assert column in rows[0]
    assert [int(r["size"]) for r in rows[:6]] == [8, 8, 8, 12, 12, 12]
    assert [r["path"] for r in rows[:3]] == list(bench.PATHS)
    assert all(float(r["diff"]) < 1e-5 for r in rows)
    assert all(float(r["speedup_fwd"]) == 1.0 for r in rows if r["path"] == "plain")
    payload = json.loads((tmp_path / "bench.json").read_text())
    assert payload["environment"]["threads"] == 1
    assert payload["environment"]["matmul_peak_gflops"] > 0
    assert len(payload["rows"]) == 18 and len(payload["rows"][0]["fwd_samples_ms"]) == 1
    # exponents: 8->12, 12->16 and 8->16, per case and path
    assert len(payload["scaling"]) == 2 * 3 * 3
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

    monkeypatch.setattr(bench_cli, "measure", spy)  # the name run_all calls
    limit = (small + large) / 2 / 2**30
    argv = ["--families", "swin", "--mixers", "W-MSA", "--sizes", "8", "16", *TINY,
            "--memory-limit", str(limit), "--out", str(tmp_path)]
    assert _bench_cli(argv) == 0
    assert attempted == [8]
    out = capsys.readouterr().out
    assert "note: swin_tiny s1.b0 W-MSA @ 16: skipped, straightforward scores need" in out
    assert len(json.loads((tmp_path / "bench.json").read_text())["rows"]) == 3


def test_estimate_falls_back_to_the_full_attention_bound(
    swin_cases: list[bench.Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    mixer = swin_cases[0].mixer
    assert bench.estimated_bytes(mixer, 2, 8, torch.float32) == (2 * 4 * 3 * 49 * 49 * 4, "")

    def no_meta(*args: object) -> int:
        raise NotImplementedError("data-dependent\nshape")

    monkeypatch.setattr(bench_memory, "score_bytes", no_meta)
    size, note = bench.estimated_bytes(mixer, 2, 8, torch.bfloat16)
    assert size == 2 * 3 * 64**2 * 2
    assert note == "full-attention bound (meta trace failed: data-dependent)"


def test_block_memory_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--families", "swin", "--mixers", "W-MSA", "--sizes", "8", *TINY,
            "--block-memory", "--block-batch", "2", "--out", str(tmp_path)]
    assert _bench_cli(argv) == 0
    blocks = json.loads((tmp_path / "bench.json").read_text())["block_memory"]
    assert [(b["what"], b["path"]) for b in blocks] == [
        (f"swin_tiny s1.b1 {part}", path) for part in ("block", "mixer") for path in bench.PATHS]
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


def _row(size: int, ms: float, path: str, speedup: float, mixer: str = "W-MSA",
         variant: str = "") -> bench.Row:
    tokens = size * size
    return bench.Row(f"c {mixer} {variant}", "swin", "m", 1, 0, mixer, 96, size, tokens, 8,
                     "float32", "cpu", 1, path, 10 * tokens, ms, 0.0, 3 * ms, 0.0, 1.0, 0.6, 0.0,
                     0.0, speedup, speedup, 0.0, vs_straightforward_fwd=speedup + 0.2,
                     vs_straightforward_fwdbwd=speedup + 0.2, variant=variant)


def test_scaling_exponents_and_targets() -> None:
    rows = [_row(s, s * s / 100, p, 1.3 if p == "core" else 1.0)
            for s in (28, 56, 224) for p in bench.PATHS]
    exponents = bench.scaling(rows)
    assert [(e["from"], e["to"]) for e in exponents[:3]] == [(28, 56), (56, 224), (28, 224)]
    assert all(e["fwd"] == pytest.approx(1.0) and e["macs"] == pytest.approx(1.0)
               for e in exponents)
    settings = bench.Settings(torch.device("cpu"), torch.float32, 8, 1, 0, 1)
    targets = [*bench.speedup_targets(rows, settings), bench.exponent_target(rows)]
    assert [t.met for t in targets] == [True, True, True, True]
    assert all(t.note == "" for t in targets)
    assert targets[0].measured == "lowest 1.30x (c W-MSA  fwd)"
    assert targets[1].measured == "lowest 1.50x (c W-MSA  fwd)"  # against straightforward
    # below the plain baseline: the first goal is missed; the straightforward one still met
    slow = [r if r.path != "core" else bench.Row(**{**r.__dict__, "speedup_fwdbwd": 0.9})
            for r in rows]
    assert [t.met for t in bench.speedup_targets(slow, settings)] == [False, True, True]
    # the exponent goal holds forward and forward + backward: a steeper backward misses it
    steep = [r if (r.path, r.size) != ("core", 224)
             else bench.Row(**{**r.__dict__, "fwdbwd_ms": 2 * r.fwdbwd_ms}) for r in rows]
    missed = bench.exponent_target(steep)
    assert missed.met is False and missed.measured == "highest 1.25 (c W-MSA , fwd+bwd)"
    other = bench.Settings(torch.device("cpu"), torch.float32, 8, 1, 0, 2)
    assert bench.speedup_targets(rows, other)[0].note == (
        "target set at batch 8, 1 threads; run: batch 8, 2 threads")


def test_salg_targets_compare_with_w_msa_at_the_same_width() -> None:
    rows = [_row(56, 10.0, "core", 1.0), _row(56, 19.0, "core", 1.0, "SemanticRegionAttention",
                                              "p=1"),
            _row(56, 31.0, "core", 1.0, "SemanticRegionAttention", "p=2")]
    targets = bench.salg_targets(rows)
    assert [(t.measured, t.met, t.goal) for t in targets] == [
        ("1.90x", True, "<= 2x"), ("3.10x", False, "<= 3x")]
    assert targets[0].note == "before 2.6x"  # no matmul peak in these rows
    rows[0].peak_gflops, rows[1].peak_gflops = 20.0, 10.0  # W-MSA's rounds had twice the peak
    assert bench.salg_targets(rows)[0].note == "before 2.6x; 0.95x scaled by each one's matmul peak"
    assert [t.met for t in bench.salg_targets(rows[1:])] == [None, None]  # no W-MSA row


def test_train_step_and_official_targets() -> None:
    steps = [{"model": "focal_mini", "batch": 64, "threads": 1, "vs_reference": 1.25,
              "vs_reference_iqr": [1.2, 1.3]},
             {"model": "salg_mini", "batch": 8, "threads": 1, "vs_reference": 1.5,
              "vs_reference_iqr": [1.4, 1.6]}]
    targets = bench.train_step_targets(steps)
    assert [(t.measured, t.met) for t in targets] == [
        ("1.25x [1.20, 1.30]", True), ("1.50x [1.40, 1.60]", False), ("not measured", None)]
    assert targets[0].note == "before 3.2x"
    assert targets[1].note.endswith("target set at batch 64, 1 thread; run: batch 8, 1")
    settings = bench.Settings(torch.device("cpu"), torch.float32, 8, 9, 1, 1)
    records = [{"case": "Swin-T W-MSA", "ratio": 1.4, "ratio_iqr": [1.3, 1.5], "note": ""},
               {"case": "Focal-T block", "ratio": 3.9, "ratio_iqr": [3.8, 4.1], "note": ""},
               {"case": "HAT-Net-T stage 1", "ratio": None, "note": "outputs differ (1e-2)"}]
    official = bench.official_targets(records, settings)
    assert [(t.name.split(":")[0], t.measured, t.met) for t in official] == [
        ("Swin-T W-MSA", "1.40x [1.30, 1.50]", True), ("Swin-T SW-MSA", "not measured", None),
        ("Focal-T block", "3.90x [3.80, 4.10]", False),
        ("HAT-Net-T stage 1", "outputs differ (1e-2)", None),
        ("HAT-Net-T stage 2", "not measured", None)]
    assert official[2].goal == ">= 4x (5x)" and official[0].note == "before 1.07x"
    memory = {"batch": 128, "official_mib": 1400.0, "minilg_mib": 600.0, "times_below": 1400 / 600}
    target = bench.official_memory_target(memory)
    assert (target.measured, target.met) == ("1,400 vs 600 MiB: 2.33x", True)
    assert bench.official_memory_target(None).met is None
    assert "target set at batch 128" in bench.official_memory_target(
        {**memory, "batch": 2}).note
    everything = bench.evaluate([], settings, [], steps, records, memory)
    assert len(everything) == 3 + 1 + 2 + 3 + 5 + 1 + 1


# --------------------------------------------------------------------------------------------
# paired rounds: rotation and statistics, on synthetic timings (a fake timer)
# --------------------------------------------------------------------------------------------


def test_round_order_rotates_and_reverses() -> None:
    two = [bench.round_order("AB", r) for r in range(4)]
    assert two == [["A", "B"], ["B", "A"], ["B", "A"], ["A", "B"]]
    three = ["".join(bench.round_order("ABC", r)) for r in range(6)]
    assert three == ["ABC", "CBA", "BCA", "ACB", "CAB", "BAC"]  # all six orders
    seven = [bench.round_order(range(7), r) for r in range(14)]
    for position in range(7):  # every name at every position equally often
        assert sorted(order[position] for order in seven) == sorted(list(range(7)) * 2)


def test_paired_rounds_time_each_call_once_per_round_in_rotated_order() -> None:
    called: list[str] = []
    times = iter(range(1, 100))

    def timer(fn: object) -> float:
        fn()  # type: ignore[operator]
        return float(next(times))

    calls = {name: (lambda name=name: called.append(name)) for name in ("a", "b", "c")}
    samples = bench.paired_rounds(calls, 3, timer)
    assert called == ["a", "b", "c", "c", "b", "a", "b", "c", "a"]
    assert samples == {"a": [1.0, 6.0, 9.0], "b": [2.0, 5.0, 7.0], "c": [3.0, 4.0, 8.0]}


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    ratio = bench.paired_ratio([2.0, 6.0, 12.0, 20.0, 30.0], [2.0, 3.0, 4.0, 5.0, 6.0])
    assert ratio == bench.Ratio(3.0, 2.0, 4.0)  # ratios 1..5: quartiles, inclusive method
    # A load spike slows both paths of one round alike: the paired ratio does not move, while
    # the ratio of unpaired medians would.
    base, path = [10.0, 10.0, 100.0, 10.0, 10.0], [5.0, 5.0, 50.0, 5.0, 5.0]
    assert bench.paired_ratio(base, path) == bench.Ratio(2.0, 2.0, 2.0)
    assert bench.paired_ratio([3.0], [2.0]) == bench.Ratio(1.5, 1.5, 1.5)
    with pytest.raises(ValueError):
        bench.paired_ratio([1.0, 2.0], [1.0])


def test_measure_reports_paired_statistics_of_its_rounds(swin_cases: list[bench.Case]) -> None:
    """With a fake timer the rows hold exactly the medians of the per-round ratios, the timed
    matmul peak and the samples in round order."""
    names = [f"{p} {m}" for p in bench.PATHS for m in ("fwd", "fwd+bwd")] + ["matmul"]
    rounds = 5
    order = [name for r in range(rounds) for name in bench.round_order(names, r)]
    base = {"core": 1.0, "plain": 2.0, "straightforward": 3.0}
    table: dict[str, list[float]] = {name: [] for name in names}
    for index, name in enumerate(order):
        r = index // len(names)
        load = 1.0 + r  # every round slower than the last
        if name == "matmul":
            table[name].append(load * 2.0)
        else:
            path, mode = name.split(" ")
            table[name].append(load * base[path] * (3 if mode == "fwd+bwd" else 1)
                                * (1.5 if (path, r) == ("core", 2) else 1.0))
    times = iter(t for index, name in enumerate(order)
                 for t in [table[name][index // len(names)]])

    settings = bench.Settings(torch.device("cpu"), torch.float32, 1, rounds, 0, 1)
    rows = bench.measure(swin_cases[0], 7, settings, peak_n=100,
                         timer=lambda fn: next(times))
    core, plain, sf = rows
    assert core.fwd_samples_ms == table["core fwd"] and sf.fwdbwd_samples_ms == table[
        "straightforward fwd+bwd"]
    assert core.speedup_fwd == 2.0 and core.speedup_fwd_iqr == [2.0, 2.0]  # round 2 is 4/3
    assert core.vs_straightforward_fwd == 3.0 and plain.speedup_fwd == 1.0
    assert sf.speedup_fwdbwd == pytest.approx(2 / 3)
    assert core.peak_gflops == pytest.approx(2 * 100**3 / (6.0 / 1e3) / 1e9)  # median 6 ms
    assert core.peak_fraction == pytest.approx(core.gflops / core.peak_gflops)
    assert core.fwd_ms == 4.0 and plain.fwd_ms == 6.0  # medians of 1, 2, 4.5, 4, 5 and 2..10


# --------------------------------------------------------------------------------------------
# the plain baseline
# --------------------------------------------------------------------------------------------


def test_plain_baseline_equals_the_core_and_never_reaches_it() -> None:
    """Outputs and input gradients of every mixer (extras included) on a map no window divides,
    through the plain path, equal the core's; under ``plain_math`` no call reaches the core's
    ``attend`` and the routing is undone afterwards."""
    from minilg.attention import core

    original = core.attend
    for case in bench.discover_cases(extras=True):
        torch.manual_seed(0)
        x = torch.randn(2, 9, 10, case.dim, requires_grad=True)
        expected = case.mixer(x)
        (grad,) = torch.autograd.grad(expected.square().sum(), x)
        forward = functools.partial(case.mixer, x)
        with bench.plain_math():
            assert bench.core_attend_calls(forward) == 0, case.name
            got = case.mixer(x)
            (got_grad,) = torch.autograd.grad(got.square().sum(), x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=case.name)
        torch.testing.assert_close(got_grad, grad, rtol=1e-4, atol=1e-4, msg=case.name)
        assert bench.core_attend_calls(forward) > 0
    assert core.attend is original


def test_plain_attend_masks_like_the_core() -> None:
    """Several sources with biases and masks, one query row with no allowed key: the plain
    attention equals the core's, and the masked row is exactly zero."""
    from minilg.attention.core import KeySource, attend

    torch.manual_seed(0)
    q = torch.randn(2, 3, 4, 8)
    allowed = torch.rand(3, 1, 4, 5) > 0.3
    allowed[1, 0, 2] = False
    sources = [KeySource(torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8),
                         torch.randn(2, 4, 5), allowed),
               KeySource(torch.randn(2, 1, 6, 8), torch.randn(2, 1, 6, 8),
                         allowed=torch.zeros(1, 1, 4, 6, dtype=torch.bool))]
    out = bench.plain_attend(q, sources, heads=2)
    torch.testing.assert_close(out, attend(q, sources, heads=2))
    assert torch.equal(out[:, 1, 2], torch.zeros(2, 8))
    mask = bench.plain_mask(sources, 4, torch.float32)
    assert mask is not None and mask.shape == (1, 3, 2, 4, 11)  # no batch axis: broadcast
    assert bench.plain_mask([KeySource(q, q)], 4, torch.float32) is None


# --------------------------------------------------------------------------------------------
# training steps and the official comparison (machinery only; no official code here)
# --------------------------------------------------------------------------------------------


def test_train_steps_are_paired_with_swin_mini() -> None:
    settings = bench.Settings(torch.device("cpu"), torch.float32, 1, 2, 0, 1)
    steps = bench.train_steps(settings, batch=1, models=["focal_mini"])
    assert [s["model"] for s in steps] == ["swin_mini", "focal_mini"]
    assert steps[0]["vs_reference"] == 1.0 and steps[0]["vs_reference_iqr"] == [1.0, 1.0]
    assert len(steps[1]["samples_ms"]) == 2 and steps[1]["vs_reference"] > 0


def test_official_machinery_without_official_code(tmp_path: Path) -> None:
    """An empty folder names each missing checkout; ``compare`` checks outputs before timing;
    the timm stand-in is there only while an official file is imported."""
    settings = bench.Settings(torch.device("cpu"), torch.float32, 1, 3, 0, 1)
    records, memory, notes = bench.run_official(tmp_path, settings, 2)
    assert records == [] and memory is None and len(notes) == 3
    assert "Swin-Transformer/models/swin_transformer.py not found" in notes[0]
    with pytest.raises(bench.BenchError, match="--official must be a folder"):
        bench.run_official(tmp_path / "nope", settings, 2)
    x = torch.randn(2, 4, 4, 8)
    same = bench.compare("same", lambda t: t * 2, lambda t: t + t, x, settings)
    assert same["max_diff"] == 0 and same["ratio"] > 0 and len(same["minilg_samples_ms"]) == 3
    differ = bench.compare("differ", lambda t: t * 2, lambda t: t, x, settings)
    assert differ["ratio"] is None and differ["note"].startswith("outputs differ")
    folder = tmp_path / "HAT-Net"
    folder.mkdir()
    (folder / "HAT_Net.py").write_text(
        "from timm.models.layers import DropPath, trunc_normal_\n"
        "from timm.models.registry import register_model\n"
        "from timm.models.vision_transformer import _cfg\n"
        "DROP = DropPath(0.1)\n")
    assert _bench_cli(["--official", str(tmp_path / "nothing"), "--official-only"]) == 2
    assert _bench_cli(["--official-only"]) == 2
    module = bench.import_official(tmp_path, "hat_net")
    assert module is not None and module.DROP(x) is x
    import importlib.util
    if importlib.util.find_spec("timm") is None:
        import sys
        assert "timm" not in sys.modules


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
    assert _bench_cli(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_without_cuda_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert _bench_cli(["--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_targets_are_data_read_from_the_package() -> None:
    """Goals and the figure measured before the core come from ``targets.json``; the code only
    compares a run with them."""
    data = bench_targets.load_targets()
    assert data["block_memory"]["before_mib"] == 1555.0
    target = bench.memory_target([])
    assert target.goal == "<= 778 MiB (2x below 1,555)" and target.met is None
    blocks = [{"what": "swin_tiny s1.b1 block", "path": "core", "batch": 128, "peak_mib": 700.0}]
    assert bench.memory_target(blocks).met is True


def test_targets_follow_the_data_file(monkeypatch: pytest.MonkeyPatch) -> None:
    data = json.loads(json.dumps(bench_targets.load_targets()))
    data["block_memory"].update(before_mib=1000.0, at_least_times_below=4)
    data["exponent"]["at_most"] = 0.5
    monkeypatch.setattr(bench_targets, "load_targets", lambda: data)
    blocks = [{"what": "swin_tiny s1.b1 block", "path": "core", "batch": 128, "peak_mib": 300.0}]
    target = bench.memory_target(blocks)
    assert target.goal == "<= 250 MiB (4x below 1,000)" and target.met is False
    assert bench.exponent_target([]).goal == "<= 0.5"


def test_verb_interface(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``add_arguments`` fills any parser, ``run`` takes its namespace; expected failures are a
    :class:`BenchError`, which the command line prints as one line (a MinilgError, exit 2)."""
    assert issubclass(bench.BenchError, MinilgError) and bench.BenchError.exit_code == 2
    parser = argparse.ArgumentParser(prog="minilg bench")
    bench.add_arguments(parser)
    args = parser.parse_args(["--families", "swin", "--mixers", "W-MSA", "--sizes", "8", *TINY,
                              "--threads", "2", "--out", str(tmp_path)])
    threads = torch.get_num_threads()
    assert bench.run(args) == 0
    assert "swin_tiny s1.b0 W-MSA" in capsys.readouterr().out
    assert json.loads((tmp_path / "bench.json").read_text())["environment"]["threads"] == 2
    assert torch.get_num_threads() == threads  # restored
    with pytest.raises(bench.BenchError, match="--rounds must be positive"):
        bench.run(parser.parse_args(["--rounds", "0"]))
    assert parser.parse_args(["--repeats", "3"]).rounds == 3  # the older spelling
    assert parser.parse_args([]).rounds == 9


def test_window_attention_is_the_w_msa_label() -> None:
    assert bench.mixer_label(WindowAttention(8, 2, 4)) == "W-MSA"
    assert bench.mixer_label(WindowAttention(8, 2, 4, shift=2)) == "SW-MSA"


# --------------------------------------------------------------------------------------------
# --breakdown: where a block spends its time and its MACs
# --------------------------------------------------------------------------------------------


def test_macs_breakdown_is_exact_for_every_case() -> None:
    """The categories' MACs sum to the block's closed form, on a map no window divides."""
    for case in bench.discover_cases():
        block = case.block_module
        assert block is not None, case.name
        macs = bench.macs_breakdown(block, 9, case.dim)
        assert list(macs) == list(bench.CATEGORIES)
        assert sum(macs.values()) == block.macs(9, 9), case.name  # type: ignore[operator]
        assert macs["MLP"] == block.mlp.macs(9, 9), case.name  # type: ignore[operator]
        assert macs["projections"] > 0 and macs["attention"] > 0, case.name
        assert macs["norms"] == macs["residual/other"] == macs["overhead"] == 0, case.name


def test_macs_breakdown_of_window_attention_by_hand(swin_cases: list[bench.Case]) -> None:
    n, c, m = 14 * 14, 96, 7
    macs = bench.macs_breakdown(swin_cases[1].block_module, 14, c)  # type: ignore[arg-type]
    assert macs["projections"] == 4 * n * c * c  # qkv (3 N C^2) and proj (N C^2)
    assert macs["attention"] == 2 * m * m * n * c  # Q K^T and A V in every window (Swin Eq. 2)
    assert macs["MLP"] == 8 * n * c * c and macs["gather/pool"] == macs["convolution"] == 0


def test_module_labels_and_categories() -> None:
    case = next(c for c in bench.discover_cases(["gg"]))
    labels = {name: bench.module_labels(case.block_module)[module]  # type: ignore[arg-type]
              for name, module in case.block_module.named_modules()}  # type: ignore[union-attr]
    assert labels[""] == "block" and labels["mixer"] == "mixer"
    assert labels["norm1"] == labels["norm2"] == "norms"
    assert labels["mlp"] == labels["mlp.fc1"] == "MLP"
    assert labels["mixer.qkv"] == labels["mixer.proj"] == "projections"
    assert labels["mixer.gaze_conv"] == "convolution"
    assert labels["mixer.position_bias"] == "bias & masks"
    assert bench.category("attend", "aten::cat") == "gather/pool"
    assert bench.category("attend", "aten::masked_fill") == "bias & masks"
    assert bench.category("kernel", "aten::scaled_dot_product_attention") == "attention"
    assert bench.category("mixer", "aten::index") == "gather/pool"
    assert bench.category("block", "aten::add") == bench.category(None) == "residual/other"


def test_time_breakdown_covers_all_time_and_leaves_nothing_behind(
    swin_cases: list[bench.Case],
) -> None:
    """Every operator of the block is counted once, the categories sum to the block's wall time,
    and the hooks and the scope listener are gone afterwards."""
    from torch.profiler import ProfilerActivity, profile

    block = swin_cases[1].block_module
    assert block is not None
    x = torch.randn(2, 14, 14, 96)
    with (torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof,
          bench.tracking(block, bench.ScopeTracker(annotate=True))):
        block(x)
    events = prof.events()
    us = bench.attribute(events, torch.device("cpu"))
    root = next(e for e in events if e.name == "minilg::block")
    assert sum(us.values()) == pytest.approx(root.cpu_time_total)
    assert all(v >= 0 for v in us.values())
    assert min(us["projections"], us["attention"], us["bias & masks"], us["MLP"],
               us["norms"]) > 0
    inside = [e for e in events if not e.name.startswith("minilg::") and e.cpu_parent is not None
              and e.cpu_parent.name.startswith("minilg::")]
    assert sum(e.cpu_time_total for e in inside) == pytest.approx(
        root.cpu_time_total - us["overhead"])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in block.modules())


class _Spy(bench.ScopeTracker):
    def __init__(self) -> None:
        super().__init__()
        self.labels: list[str] = []

    def push(self, label: str) -> None:
        self.labels.append(label)
        super().push(label)

    def enter(self, label: str) -> None:
        self.labels.append(label)
        super().enter(label)


def test_tracking_listens_to_the_core_scopes_only_while_it_runs(
    swin_cases: list[bench.Case],
) -> None:
    """The core's named scopes reach the tracker inside the block's module scopes, in order;
    after ``tracking`` neither scopes nor module calls reach it."""
    block = swin_cases[0].block_module
    assert block is not None
    spy = _Spy()
    with torch.no_grad(), bench.tracking(block, spy):
        block(torch.randn(1, 7, 7, 96))
    assert spy.stack == []
    assert spy.labels[:3] == ["block", "norms", "mixer"]
    assert spy.labels[spy.labels.index("mixer"):][1:5] == [
        "projections", "bias & masks", "attend", "kernel"]
    assert spy.labels.count("attend") == spy.labels.count("kernel") == 1
    count = len(spy.labels)
    with torch.no_grad(), scope("attend"):
        block(torch.randn(1, 7, 7, 96))
    assert len(spy.labels) == count


def test_cli_breakdown_and_how_the_figures_were_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--families", "swin", "--mixers", "W-MSA", "--sizes", "8", "14", *TINY,
            "--breakdown", "--note", "idle machine", "--out", str(tmp_path)]
    assert _bench_cli(argv) == 0
    assert "Where the block's forward spends its time" in capsys.readouterr().out
    payload = json.loads((tmp_path / "bench.json").read_text())
    env = payload["environment"]
    # the options that differ from their defaults, in the order of --help
    assert env["command"] == "python -m minilg bench " + shlex.join([
        "--batch", "1", "--sizes", "8", "14", "--rounds", "1", "--warmup", "0",
        "--families", "swin", "--mixers", "W-MSA", "--peak-n", "64", "--breakdown",
        "--note", "idle machine", "--out", str(tmp_path)])
    assert "--note 'idle machine'" in env["command"]
    assert env["note"] == "idle machine" and env["date"].endswith("Z")
    assert len(env["loadavg_1_5_15"]) == len(env["loadavg_1_5_15_end"]) == 3
    assert env["cpu_model"]
    assert env["matmul_peak_gflops"] == env["matmul_peak_gflops_before_after"][0]
    assert all(r["peak_fraction"] == pytest.approx(r["gflops"] / r["peak_gflops"])
               for r in payload["rows"])
    assert env["matmul_peak_gflops_in_rounds"] == [payload["rows"][0]["peak_gflops"],
                                                   payload["rows"][3]["peak_gflops"]]
    records = payload["breakdown"]
    assert [(r["case"], r["size"]) for r in records] == [("swin_tiny s1.b0 W-MSA", 8),
                                                         ("swin_tiny s1.b0 W-MSA", 14)]
    for record in records:
        # projections and MLP on the real tokens, attention on the map padded to 14 x 14
        assert sum(record["macs"].values()) == record["macs_total"] == (
            record["size"] ** 2 * 12 * 96 * 96 + 2 * 49 * 14 * 14 * 96)
        assert sum(record["ms"].values()) == pytest.approx(record["profiled_ms"])
        assert record["unprofiled_ms"] > 0
    with (tmp_path / "breakdown.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * len(bench.CATEGORIES)
    assert sum(float(r["time_share"]) for r in rows[: len(bench.CATEGORIES)]) == pytest.approx(1)
