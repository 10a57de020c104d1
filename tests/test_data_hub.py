"""minilg.data.hub: what each hub failure says, and how a hub split becomes a cache.

No network: ``datasets.load_dataset`` is monkeypatched to raise the exceptions ``datasets``
raises, or to return a small in-memory ``datasets.Dataset``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from minilg.data import DatasetUnavailableError, load_subset
from minilg.data.hub import classify_error


def _gated_error() -> Exception:
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import GatedRepoError

    # built without an HTTP response object (its __init__ wants one); only type and text matter
    gated = GatedRepoError.__new__(GatedRepoError)
    Exception.__init__(gated, "401 Client Error. Cannot access gated repo.")
    try:
        try:
            raise gated
        except GatedRepoError as inner:
            raise DatasetNotFoundError(
                "Dataset 'ILSVRC/imagenet-1k' is a gated dataset on the Hub. "
                "You must be authenticated to access it."
            ) from inner
    except DatasetNotFoundError as exc:
        out: Exception = exc
    return out


def _offline_error() -> Exception:
    from huggingface_hub.errors import OfflineModeIsEnabled

    try:
        try:
            raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode")
        except OfflineModeIsEnabled as inner:
            raise ConnectionError(
                "Couldn't reach 'zh-plus/tiny-imagenet' on the Hub (OfflineModeIsEnabled)"
            ) from inner
    except ConnectionError as exc:
        return exc


def _patch_load_dataset(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> list[dict[str, Any]]:
    import datasets

    calls: list[dict[str, Any]] = []

    def fake(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise exc

    monkeypatch.setattr(datasets, "load_dataset", fake)
    return calls


def test_gated_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _patch_load_dataset(monkeypatch, _gated_error())
    with pytest.raises(DatasetUnavailableError) as info:
        load_subset("imagenet-1k", "val", cache_dir=tmp_path)
    msg = str(info.value)
    assert calls == [{"path": "ILSVRC/imagenet-1k", "split": "validation"}]
    assert info.value.reason == "gated"
    assert "ILSVRC/imagenet-1k" in msg  # what was tried
    assert "You must be authenticated" in msg  # the original exception text
    assert "huggingface-cli login" in msg and "accept the terms" in msg  # what to do
    assert "https://huggingface.co/datasets/ILSVRC/imagenet-1k" in msg
    assert "root=" in msg and "load_subset('synthetic')" in msg


def test_offline_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = _patch_load_dataset(monkeypatch, _offline_error())
    with pytest.raises(DatasetUnavailableError) as info:
        load_subset("tiny-imagenet", "val", cache_dir=tmp_path)
    msg = str(info.value)
    assert calls[0]["split"] == "valid"  # tiny-imagenet names its split "valid"
    assert info.value.reason == "offline"
    assert "zh-plus/tiny-imagenet" in msg and "OfflineModeIsEnabled" in msg
    assert "unset HF_HUB_OFFLINE" in msg and "root=" in msg and "synthetic" in msg


def test_script_repo_uses_parquet_export_then_skips_tarball_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    calls = _patch_load_dataset(monkeypatch, _offline_error())
    with pytest.raises(DatasetUnavailableError) as info:
        load_subset("imagenette", "val", 64, cache_dir=tmp_path)
    assert calls == [
        {
            "path": "frgfm/imagenette",
            "name": "160px",
            "split": "validation",
            "revision": "refs/convert/parquet",
        }
    ]
    msg = str(info.value)
    assert "imagenette2-160.tgz" in msg and "skipped: offline" in msg
    assert "unset HF_DATASETS_OFFLINE" in msg


def test_missing_repo_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from datasets.exceptions import DatasetNotFoundError

    exc = DatasetNotFoundError(
        "Dataset 'clane9/imagenet-100' doesn't exist on the Hub or cannot be accessed."
    )
    _patch_load_dataset(monkeypatch, exc)
    with pytest.raises(DatasetUnavailableError) as info:
        load_subset("imagenet-100", cache_dir=tmp_path)
    assert info.value.reason == "missing"
    assert "doesn't exist on the Hub" in str(info.value)
    assert len(info.value.attempts) == 1


def test_classify_error() -> None:
    assert classify_error(_gated_error()) == "gated"
    assert classify_error(_offline_error()) == "offline"
    script = RuntimeError("Dataset scripts are no longer supported, but found imagenette.py")
    assert classify_error(script) == "script"
    assert classify_error(ValueError("boom")) == "error"


@pytest.mark.slow
def test_real_offline_mode_subprocess(tmp_path: Path) -> None:
    """With HF_HUB_OFFLINE=1 set before import, datasets itself refuses: no network use."""
    code = (
        "from minilg.data import load_subset, DatasetUnavailableError\n"
        "try:\n"
        f"    load_subset('tiny-imagenet', 'val', cache_dir=r'{tmp_path}')\n"
        "except DatasetUnavailableError as e:\n"
        "    print('REASON', e.reason); print(e)\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert "REASON offline" in out.stdout, out.stdout + out.stderr
    assert "Couldn't reach" in out.stdout and "unset HF_HUB_OFFLINE" in out.stdout


# ------------------------------------------------------------------- a loaded split (no network)


def _hub_dataset(names: list[str], labels: list[int]) -> Any:
    """An in-memory ``datasets.Dataset`` like a hub parquet repo: PNG bytes + a ClassLabel."""
    import io

    import datasets
    from PIL import Image

    def png(label: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (24, 20), (40 * label, 200 - 40 * label, 90)).save(buf, "PNG")
        return buf.getvalue()

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    )
    rows = {"image": [{"bytes": png(lab), "path": None} for lab in labels], "label": labels}
    return datasets.Dataset.from_dict(rows, features=features)


def test_a_hub_split_is_prepared_with_wnids_and_readable_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import datasets

    # imagenette's parquet export names its labels, not its wnids: the registry maps them
    names = ["tench", "English springer", "cassette player", "chain saw", "church",
             "French horn", "garbage truck", "gas pump", "golf ball", "parachute"]
    ds = _hub_dataset(names, [3, 0, 3, 9, 0, 3])
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(datasets, "load_dataset", lambda **kw: calls.append(kw) or ds)
    out = load_subset("imagenette", "val", 16, cache_dir=tmp_path, wnids=["n03000684", "n01440764"])
    assert calls == [{"path": "frgfm/imagenette", "name": "160px", "split": "validation",
                      "revision": "refs/convert/parquet"}]
    assert out.wnids == ["n01440764", "n03000684"] and out.classes == ["tench", "chain saw"]
    assert out.labels.tolist() == [1, 0, 1, 0, 1]  # hub rows 0, 1, 2, 4, 5 in order
    assert out.images.shape == (5, 16, 16, 3) and not out.from_cache
    assert tuple(int(v) for v in out.images[1, 8, 8]) == (0, 200, 90)  # a tench (label 0)
    again = load_subset("imagenette", "val", 16, cache_dir=tmp_path,
                        wnids=["n01440764", "n03000684"])
    assert again.from_cache and len(calls) == 1  # the cache answers; the hub is not asked
    assert torch.equal(again.images, out.images)


def test_the_fastai_tarball_is_the_last_resort(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import datasets
    from datasets.exceptions import DatasetNotFoundError
    from PIL import Image

    extracted = tmp_path / "extracted"
    for split in ("train", "val"):
        (extracted / "imagewoof2-160" / split / "n02086240").mkdir(parents=True)
        Image.new("RGB", (20, 20), (9, 9, 9)).save(
            extracted / "imagewoof2-160" / split / "n02086240" / "0.png"
        )
    _patch_load_dataset(monkeypatch, DatasetNotFoundError("the parquet export is gone"))
    urls: list[str] = []

    def download(self: Any, url: str) -> str:
        urls.append(url)
        return str(extracted)

    monkeypatch.setattr(datasets.DownloadManager, "download_and_extract", download)
    out = load_subset("imagewoof", "val", 16, cache_dir=tmp_path / "cache")
    assert urls == ["https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-160.tgz"]
    assert out.classes == ["Shih-Tzu"] and len(out) == 1


def test_hub_data_without_the_datasets_package_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The library installs without `datasets` (the `hub` extra); asking for hub data then
    says what to install, and local copies and the embedded tasks still load."""
    import sys

    from minilg.data import load_subset
    from minilg.errors import DatasetUnavailableError

    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(DatasetUnavailableError) as info:
        load_subset("imagenette", "val", 64, cache_dir=tmp_path)
    message = str(info.value)
    assert info.value.reason == "no_datasets" and "pip install 'minilg[hub]'" in message
    assert "needs the datasets package, which is not installed" in message
    assert len(load_subset("match", "val", cache_dir=tmp_path, max_per_class=2)) == 4
