"""Checkpoints as one atomic unit: weights, training state and a manifest with checksums.

Layout of a run folder (``TrainConfig.out``)::

    config.json  metrics.csv  metrics.json  curves.png      single files, each replaced atomically
    .minilg.lock                                             held while a run writes here
    checkpoints/LATEST                                       "epoch-0003": the current checkpoint
    checkpoints/epoch-0003/model.safetensors                 weights (+ metadata, tensor checksum)
    checkpoints/epoch-0003/train_state.pt                    optimizer, scaler, counters, RNGs
    checkpoints/epoch-0003/manifest.json                     epoch, step, model, classes, config,
                                                             size + sha256 of the two files above

How a save stays atomic (:func:`save_checkpoint`): the three files are written into a temporary
folder ``checkpoints/.tmp-epoch-0004-<pid>``, each fsynced; the folder is renamed to
``epoch-0004``; then ``LATEST`` is replaced (a temporary file, fsync, :func:`os.replace`): that one
step makes the new checkpoint current. Only then is ``epoch-0003`` removed. A kill at any point
leaves ``LATEST`` naming a complete, verified checkpoint (the old or the new one); whatever the
kill left half-done is an orphan that :func:`clean_orphans` removes at the next start. A write
error (a full disk) removes the temporary folder and raises :class:`CheckpointError`, with the
previous checkpoint intact.

Loading (:func:`load_checkpoint`) verifies both files against the manifest's sizes and sha256,
and checks that the parts agree (model name, epoch, step, class count, config); any
disagreement is reported file by file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from minilg.errors import CheckpointError
from minilg.io import atomic_write_bytes
from minilg.models.legacy import upgrade_state_dict

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "LATEST"
FORMAT = 2
# Fields of TrainConfig that may differ between a checkpoint and the run resuming it.
RESUME_MAY_CHANGE = frozenset(
    {"device", "compile", "threads", "out", "resume", "stop_after", "verbose"}
)


def _crash_point(name: str) -> None:
    """Called between the write steps of a save; tests replace it to inject kills and errors."""


# ----------------------------------------------------------------------------- atomic files
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _torch_save_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- random states
def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """Every random state the training loop touches, as plain tensors/lists (weights_only-safe)."""
    np_state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": generator.get_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["data"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


# ----------------------------------------------------------------------------- weights
def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def metadata_digest(metadata: dict[str, str]) -> str:
    """sha256 over every metadata entry but the checksums themselves, in key order."""
    plain = {k: v for k, v in metadata.items() if k not in _CHECKSUM_KEYS}
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


_CHECKSUM_KEYS = ("tensors_sha256", "metadata_sha256")


def _weights_bytes(model: nn.Module, metadata: dict[str, str]) -> bytes:
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {**metadata, "tensors_sha256": tensors_digest(tensors)}
    meta["metadata_sha256"] = metadata_digest(meta)
    return save(tensors, metadata=meta)


def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, str]) -> None:
    """Atomically save ``model.state_dict()`` as safetensors with string ``metadata`` (plus the
    ``tensors_sha256`` and ``metadata_sha256`` checksums that :func:`load_weights` and
    :func:`read_weights_metadata` verify: the tensors, and the metadata that rebuilds the
    model)."""
    atomic_write_bytes(path, lambda: _weights_bytes(model, metadata))


def read_weights_metadata(path: str | Path) -> dict[str, str]:
    """The metadata dictionary stored in a safetensors file header, verified against its
    ``metadata_sha256`` when there is one (an edited ``img_size`` is a CheckpointError)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= 100_000_000:
                raise ValueError("bad header length")
            header: dict[str, Any] = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not a safetensors file ({e})") from None
    meta: dict[str, str] = header.get("__metadata__") or {}
    expected = meta.get("metadata_sha256")
    if expected is not None and metadata_digest(meta) != expected:
        raise CheckpointError(
            f"{path} is corrupt: its metadata (model, num_classes, img_size, ...) do not match "
            "their checksum; it was edited after it was written"
        )
    return meta


def load_weights(path: str | Path, model: nn.Module, device: str | torch.device = "cpu") -> None:
    """Load safetensors weights into ``model`` (strict: every key and shape must match),
    verifying the stored tensor checksum when there is one."""
    meta = read_weights_metadata(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} cannot be read: {e}") from None
    expected = meta.get("tensors_sha256")
    if expected is not None and tensors_digest(tensors) != expected:
        raise CheckpointError(f"{path} is corrupt: its tensors do not match their checksum")
    try:
        model.load_state_dict(upgrade_state_dict(tensors, model.state_dict()))  # older layouts
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:2]
        raise CheckpointError(
            f"{path} does not fit {type(model).__name__}: {' '.join(first)}"
        ) from None
    model.to(device)


# ----------------------------------------------------------------------------- the checkpoint unit
def _ckpt_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The current checkpoint folder of ``run_dir``, or None.

    It is the one ``checkpoints/LATEST`` names. Without ``LATEST`` (deleted by hand, or a kill
    between the first checkpoint's rename and its pointer) it is the newest checkpoint folder that
    verifies (:func:`recoverable_checkpoint`): a complete checkpoint is never an orphan.
    """
    pointer = _ckpt_root(run_dir) / LATEST_FILE
    if not pointer.is_file():
        return recoverable_checkpoint(run_dir)
    name = pointer.read_text().strip()
    folder = pointer.parent / name
    if not name or "/" in name or not folder.is_dir():
        raise CheckpointError(
            f"{pointer} names {name!r}, which is not a checkpoint folder beside it: the run "
            "folder was edited by hand; restore that folder or start a new run"
        )
    return folder


def recoverable_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``epoch-NNNN`` folder of ``run_dir`` that verifies, when ``LATEST`` is missing
    (None when ``LATEST`` is there or no folder verifies)."""
    root = _ckpt_root(run_dir)
    if not root.is_dir() or (root / LATEST_FILE).is_file():
        return None
    for folder in sorted(root.glob("epoch-[0-9][0-9][0-9][0-9]"), reverse=True):
        if folder.is_dir() and not folder.is_symlink():
            try:
                verify_checkpoint(folder)
            except CheckpointError:
                continue
            return folder
    return None


def recover_latest(run_dir: str | Path) -> Path | None:
    """Write the missing ``LATEST`` for :func:`recoverable_checkpoint`; returns the folder it now
    names (None when nothing was recovered). Call it only while holding the run folder's lock."""
    folder = recoverable_checkpoint(run_dir)
    if folder is not None:
        _point_latest(folder.parent, folder.name)
    return folder


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint (``checkpoints/LATEST``, or a complete checkpoint
    folder that :func:`recover_latest` would make current)."""
    return (_ckpt_root(run_dir) / LATEST_FILE).is_file() or (
        recoverable_checkpoint(run_dir) is not None
    )


def clean_orphans(run_dir: str | Path) -> list[str]:
    """Remove what interrupted saves left in ``run_dir/checkpoints``; returns the names removed.

    Orphans: temporary folders and pointer files, and checkpoint folders that are not current
    (:func:`latest_checkpoint`: never the newest complete one when ``LATEST`` is missing). Call
    it only while holding the run folder's lock.
    """
    root = _ckpt_root(run_dir)
    if not root.is_dir():
        return []
    current = latest_checkpoint(run_dir)
    removed = []
    for p in sorted(root.iterdir()):
        if p.name == LATEST_FILE or (current is not None and p.name == current.name):
            continue
        if p.name.startswith((".tmp-", ".LATEST.", "epoch-")):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p.name)
    return removed


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    state: dict[str, Any],
    metadata: dict[str, str],
    config: dict[str, Any] | None = None,
) -> Path:
    """Write one checkpoint atomically (see the module docstring); returns its folder.

    ``state`` must hold integer ``"epoch"`` and ``"step"``. ``metadata`` (strings) goes into the
    safetensors header; ``config`` (the run's TrainConfig as a dict) into the manifest.
    """
    root = _ckpt_root(run_dir)
    name = f"epoch-{int(state['epoch']):04d}"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-{os.getpid()}-", dir=root))
    try:
        _write_unit(tmp, model, state, metadata, config)
        _crash_point("rename")
        final = root / name
        if final.exists():  # an orphan of an interrupted save of the same epoch
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"could not write the checkpoint of epoch {state['epoch']} in {root}: {e}; the "
            "previous checkpoint is intact (free space or fix the folder, then --resume)"
        ) from e
    try:
        _point_latest(root, name)
    except CheckpointError:
        shutil.rmtree(final, ignore_errors=True)
        raise
    for old in root.iterdir():  # the previous checkpoint, now superseded
        if old.name.startswith("epoch-") and old.name != name:
            _crash_point("remove-previous")
            shutil.rmtree(old, ignore_errors=True)
    return final


def _write_unit(
    folder: Path,
    model: nn.Module,
    state: dict[str, Any],
    metadata: dict[str, str],
    config: dict[str, Any] | None,
) -> None:
    """The three files of one checkpoint, each fsynced, into ``folder``."""
    epoch, step = int(state["epoch"]), int(state["step"])
    meta = {**metadata, "epoch": str(epoch), "step": str(step)}
    files: dict[str, dict[str, Any]] = {}
    producers: list[tuple[str, Callable[[], bytes]]] = [
        (WEIGHTS_FILE, lambda: _weights_bytes(model, meta)),
        (STATE_FILE, lambda: _torch_save_bytes(state)),
    ]
    for fname, produce in producers:
        _crash_point(f"write {fname}")
        data = produce()
        _write_synced(folder / fname, data)
        files[fname] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "format": FORMAT,
        "epoch": epoch,
        "step": step,
        "model": metadata.get("model"),
        "num_classes": int(metadata["num_classes"]) if "num_classes" in metadata else None,
        "config": config,
        "files": files,
    }
    _crash_point(f"write {MANIFEST_FILE}")
    _write_synced(folder / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
    _fsync_dir(folder)


def _point_latest(root: Path, name: str) -> None:
    """Make ``name`` current: the one atomic step of a save."""
    _crash_point("write LATEST")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".LATEST.", dir=root)
        with os.fdopen(fd, "wb") as f:
            f.write(f"{name}\n".encode())
            f.flush()
            os.fsync(f.fileno())
        _crash_point("replace LATEST")
        os.replace(tmp, root / LATEST_FILE)
        _fsync_dir(root)
    except Exception as e:
        raise CheckpointError(
            f"could not make {root / name} current: {e}; the previous checkpoint is intact "
            "(free space or fix the folder, then --resume)"
        ) from e


# ----------------------------------------------------------------------------- verification
def verify_checkpoint(folder: str | Path) -> dict[str, Any]:
    """The manifest of checkpoint ``folder`` after checking each file's size and sha256."""
    folder = Path(folder)
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST_FILE).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: {MANIFEST_FILE} is missing") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{folder / MANIFEST_FILE} is corrupt ({e})") from None
    for fname in (WEIGHTS_FILE, STATE_FILE):
        path = folder / fname
        want = files.get(fname) or {}
        if not path.is_file():
            raise CheckpointError(f"{path} is missing")
        if path.stat().st_size != want.get("bytes") or _sha256_file(path) != want.get("sha256"):
            raise CheckpointError(
                f"{path} is corrupt: its size or sha256 differs from {MANIFEST_FILE}"
            )
    return manifest


def _disagreements(views: dict[str, dict[str, Any]]) -> list[str]:
    """``views``: file name -> {field: value}; one phrase per field on which files disagree."""
    out = []
    fields = sorted({k for v in views.values() for k in v})
    for key in fields:
        seen = {f: v[key] for f, v in views.items() if key in v and v[key] is not None}
        if len({json.dumps(x, sort_keys=True) for x in seen.values()}) > 1:
            out.append(f"{key}: " + ", ".join(f"{f} says {x!r}" for f, x in seen.items()))
    return out


def load_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    device: str | torch.device = "cpu",
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Verify the current checkpoint of ``run_dir``, load its weights into ``model`` and return
    its training state. ``config``: the run's ``config.json``, checked against the manifest."""
    folder = latest_checkpoint(run_dir)
    if folder is None:
        raise CheckpointError(f"{run_dir} holds no checkpoint in the current layout")
    manifest = verify_checkpoint(folder)
    meta = read_weights_metadata(folder / WEIGHTS_FILE)
    state: dict[str, Any] = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    views: dict[str, dict[str, Any]] = {
        MANIFEST_FILE: {k: manifest.get(k) for k in ("epoch", "step", "model", "num_classes")},
        WEIGHTS_FILE: {
            "epoch": int(meta["epoch"]) if "epoch" in meta else None,
            "step": int(meta["step"]) if "step" in meta else None,
            "model": meta.get("model"),
            "num_classes": int(meta["num_classes"]) if "num_classes" in meta else None,
        },
        STATE_FILE: {"epoch": state.get("epoch"), "step": state.get("step")},
    }
    if config is not None and manifest.get("config") is not None:
        keep = [k for k in config if k not in RESUME_MAY_CHANGE]
        views[MANIFEST_FILE]["config"] = {k: manifest["config"].get(k) for k in keep}
        views[CONFIG_FILE] = {"config": {k: config[k] for k in keep}, "model": config["model"]}
    problems = _disagreements(views)
    if problems:
        raise CheckpointError(f"checkpoint {folder} is inconsistent: " + "; ".join(problems))
    load_weights(folder / WEIGHTS_FILE, model, device)
    return state
