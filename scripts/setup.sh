#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install minilg into it.
#
#   bash scripts/setup.sh            # CPU build of PyTorch 2.13.0 (default)
#   TORCH_SPEC="torch==2.5.1" bash scripts/setup.sh      # any other PyTorch you want
#   TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124" bash scripts/setup.sh
#   VENV=/path/to/env PYTHON=python3.12 bash scripts/setup.sh
#   EXTRAS= NO_COMPILE=1 bash scripts/setup.sh   # what `make run` does: the library only
#
# PyTorch is installed first and pinned, so that resolving minilg's own requirement (torch>=2.13)
# never pulls a different, multi-GB build. Python 3.11 or newer is required.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${EXTRAS-dev,notebooks}"  # set but empty: the library alone

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: minilg needs Python >= 3.11, got $("$PYTHON" --version 2>&1); set PYTHON=python3.11" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtual environment $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
INSTALL=(install -q)
# NO_COMPILE=1 (make run): no bytecode for every file of every package at install time (for torch
# that is most of a minute); Python compiles each module it imports instead. For few processes
# (the main job) that is faster; for many (make test) compile at install, above all where
# PYTHONDONTWRITEBYTECODE is set and imports would compile again in every process.
if [ "${NO_COMPILE:-0}" = 1 ]; then INSTALL+=(--no-compile); fi
echo "==> installing $TORCH_SPEC"
# shellcheck disable=SC2086  # TORCH_SPEC may carry pip options such as --index-url
"${PIP[@]}" "${INSTALL[@]}" $TORCH_SPEC
if [ -n "$EXTRAS" ]; then
  echo "==> installing minilg (editable) with extras [$EXTRAS]"
  "${PIP[@]}" "${INSTALL[@]}" -e ".[$EXTRAS]"
else
  echo "==> installing minilg (editable)"
  "${PIP[@]}" "${INSTALL[@]}" -e .
fi
"$VENV/bin/python" -c "import torch, minilg; print(f'minilg {minilg.__version__}, torch {torch.__version__}')"
