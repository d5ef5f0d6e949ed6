#!/usr/bin/env bash
# Set up .venv with the pinned requirements and the small real model that the README's first command trains
# (on any machine, with or without a GPU).
# Safe to run again: pip skips what is installed, and the model folder is built once.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and on its own: where a local CPU build of this version exists, pip takes it instead of
# downloading the CUDA build.
python -m pip install -q "$(grep '^torch==' requirements.txt)"
python -m pip install -q -r requirements.txt
python scripts/prepare_small_model.py
