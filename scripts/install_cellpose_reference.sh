#!/usr/bin/env bash
# Install cellpose 3.1 (reference for tests/test_flows.py and scripts/benchmark_flows.py) into .bench/cellpose,
# outside the project environment: --target with --no-deps, so nothing in .venv changes. .bench/ is git-ignored.
# cellpose pins numpy<2.1; its flow code runs with the project's numpy 2.x, so that pin is ignored on purpose.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TARGET="$ROOT/.bench/cellpose"
mkdir -p "$TARGET"
"$PY" -m pip install --no-deps --upgrade --target "$TARGET" "cellpose>=3.1,<3.2"
# what cellpose.dynamics imports that the project environment lacks (numba/llvmlite: its CPU kernels)
"$PY" -m pip install --no-deps --upgrade --target "$TARGET" \
    natsort numba llvmlite opencv-python-headless fastremap roifile fill-voids
PYTHONPATH="$TARGET" "$PY" -c "import importlib.metadata as m, cellpose.dynamics; print('cellpose', m.version('cellpose'), 'ok')"
