#!/usr/bin/env bash
# The GPU check: one command for a bare machine with one H100 or H200 (torch, transformers, PEFT and accelerate
# there; no network): the other packages (trl, datasets, bitsandbytes, ... at requirements.txt's versions) come as
# wheels for its Python in .whl/, downloaded beforehand. At most 6 minutes of wall time in all, in parts that each
# have their own time limit and write their figures as soon as they have them, so that a hang or an out-of-memory
# in one part still returns the others:
#
#   default    bench/train_speed.py's "default" path: the script's attention choice, batching and fused loss,
#              on Gemma-2-9b's architecture with random bf16 weights
#   original   the original design's path (eager attention, padded, full logits) on the same tokens
#   qlora      the QLoRA path (NF4, double quantisation, bf16 compute) on the same tokens
#   script     a few real optimizer steps of scripts/multi_turn_finetuning.py on Gemma-2-9b's layer sizes
#              (bench/script_model.py: 4 layers, random weights, a tokenizer trained here)
#   summary    the default path's speed against the original's, MFU and peak memory of each (summary.json)
#
#   bash bench/gpu_check.sh           # on the GPU; figures in $OUT (the device's folder) or bench/results/gpu-check-DATE/
#   bash bench/gpu_check.sh --tiny    # the same parts on the CPU, tiny, in about a minute (tests/test_bench.py)
set -uo pipefail
TINY=0
for arg in "$@"; do
  case "$arg" in
    --tiny) TINY=1 ;;
    *) echo "usage: bash bench/gpu_check.sh [--tiny]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT_DIR=${OUT:-bench/results/gpu-check-$(date +%Y-%m-%d)}
mkdir -p "$OUT_DIR"
if ls .whl/*.whl >/dev/null 2>&1; then  # the wheels brought for a bare machine
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if [ "$TINY" = 1 ]; then
  SPEED=(--tiny --steps 1 --warmup 0) MODEL=(--tiny) LIMITS=(60 60 60 90)
  STEPS=(--max_steps=2 --batch_size=2 --gradient_accumulation_steps=1 --max_seq_length=256)
else
  SPEED=(--steps 4 --warmup 2) MODEL=(--layers 4) LIMITS=(75 75 100 80)  # 330 s, and installing the wheels
  STEPS=(--max_steps=6 --batch_size=4 --gradient_accumulation_steps=2 --max_seq_length=2048)
fi
"$PY" - > "$OUT_DIR/versions.json" <<'PY'
import importlib.metadata as m, json, platform
names = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "flash-attn", "triton")
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
print(json.dumps({"python": platform.python_version(), **{n: version(n) for n in names}}, indent=1))
PY

part() {  # part NAME LIMIT COMMAND...: its output in NAME.log, its exit status in parts.txt
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "== $name (at most ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  local status=$?
  echo "$name: exit $status in $((SECONDS - start)) s$([ $status = 124 ] && echo ' (time limit)')" | tee -a "$OUT_DIR/parts.txt"
  tail -n 3 "$OUT_DIR/$name.log"
}
: > "$OUT_DIR/parts.txt"
part default "${LIMITS[0]}" "$PY" bench/train_speed.py "${SPEED[@]}" --paths default --out "$OUT_DIR/default.json"
part original "${LIMITS[1]}" "$PY" bench/train_speed.py "${SPEED[@]}" --paths original --out "$OUT_DIR/original.json"
part qlora "${LIMITS[2]}" "$PY" bench/train_speed.py "${SPEED[@]}" --paths qlora --out "$OUT_DIR/qlora.json"
part script "${LIMITS[3]}" bash -c "'$PY' bench/script_model.py '$OUT_DIR/script-model' ${MODEL[*]} && \
  '$PY' scripts/multi_turn_finetuning.py --model_name='$OUT_DIR/script-model' --output_dir='$OUT_DIR/script-runs' \
  --run_name=check ${STEPS[*]} --logging_steps=1 --save_steps=0 --reply_prompts=0 --preview_examples=0 \
  && rm -rf '$OUT_DIR/script-model'"
"$PY" bench/gpu_summary.py "$OUT_DIR"
