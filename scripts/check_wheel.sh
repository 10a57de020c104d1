#!/usr/bin/env bash
# The wheel works outside the checkout: build it, install it into a new virtual environment in a
# temporary folder (no system site-packages, no editable install, no extras), and there run the
# command line and one forward of every registered mini model.
#
#   bash scripts/check_wheel.sh                       # torch==2.13.0 (CI's pin)
#   TORCH_SPEC="torch==2.13.0" PYTHON=python3.11 bash scripts/check_wheel.sh
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$(pwd)
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
start=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset PYTHONPATH
export MINILG_QUIET=1 MINILG_CACHE="$work/cache"

echo "==> new virtual environment in $work"
"$PYTHON" -m venv "$work/venv"
PIP=("$work/venv/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
# shellcheck disable=SC2086  # TORCH_SPEC may carry pip options such as --index-url
"${PIP[@]}" install $TORCH_SPEC

echo "==> building the wheel"
"${PIP[@]}" wheel --no-deps --wheel-dir "$work/dist" "$checkout"
wheel=$(ls "$work"/dist/minilg-*.whl)
"$work/venv/bin/python" -c "import sys, zipfile; names = zipfile.ZipFile(sys.argv[1]).namelist(); \
assert 'minilg/paper_tables.csv' in names, 'wheel lacks minilg/paper_tables.csv'" "$wheel"
"${PIP[@]}" install "$wheel"

cd "$work"  # outside the checkout: only the installed package can be imported
bin="$work/venv/bin"
"$bin/python" - "$checkout" <<'PY'
import importlib.util
import sys

import minilg

checkout = sys.argv[1]
assert not minilg.__file__.startswith(checkout), f"imported the checkout: {minilg.__file__}"
for optional in ("nbval", "jupyterlab", "pytest", "nbgrader"):
    assert importlib.util.find_spec(optional) is None, f"core install pulled {optional}"
print(f"minilg {minilg.__version__} from {minilg.__file__}")
PY
echo "==> minilg list";  "$bin/minilg" list
echo "==> minilg info";  "$bin/minilg" info > info.txt && grep -q "Focal Table 2" info.txt \
  && echo "info: $(wc -l < info.txt) lines, published figures read from the package"
echo "==> one forward of every registered mini"
"$bin/python" - <<'PY'
import torch

import minilg

torch.manual_seed(0)
for name in minilg.list_models(mini=True):
    model = minilg.create_model(name).eval()
    side = model.img_size
    with torch.no_grad():
        logits = model(torch.randn(2, 3, side, side))
    assert logits.shape[0] == 2 and torch.isfinite(logits).all(), name
    print(f"{name:24s} {side}x{side} -> {tuple(logits.shape)}")
PY
echo "==> minilg train: one short epoch on the embedded data"
"$bin/minilg" train --model gg_mini --epochs 1 --warmup-epochs 0 --max-train-samples 256 \
  --max-eval-samples 128 --batch-size 64 --out "$work/runs/gg" --no-verbose
ls "$work/runs/gg"
echo "==> minilg convert --help";  "$bin/minilg" convert --help > /dev/null && echo ok
echo "==> minilg bench --help";    "$bin/minilg" bench --help > /dev/null && echo ok
echo "==> wheel check passed in $(( $(date +%s) - start )) s"
