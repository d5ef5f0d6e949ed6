"""Benchmark: the CPU training step of the real script, fp32 against bf16, activation checkpointing on and off,
and the cost of training the control tokens' embedding rows (TRAIN_CONTROL_TOKENS, which the small base model
triggers).

    python bench/cpu_train.py                 # 10 steps per variant on the sample data, the quick start's settings
    python bench/cpu_train.py --steps 3       # smoke run

Each variant runs scripts/multi_turn_finetuning.py in its own process on the small Gemma 3 270M model, with the
same data, seed and steps, and one progress line per step. Recorded per variant: tokens/s (median over the steps
after the first two, which include warm-up), the process's peak resident memory, and the loss of every step, so
that the bf16 loss curve can be compared with fp32's. The figures go to bench/results/cpu-train-<cpu>-<date>.json.
"""

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile

from common import ROOT, SCRIPT, cpu_name, versions, write_results

STEP = re.compile(r"step\s+(\d+)/\d+ \| loss ([\d.]+) \| lr \S+ \| ([\d,]+) tok/s \| mem ([\d.]+) GiB")
# name -> (precision, activation checkpointing, control-token rows trained)
VARIANTS = {"fp32 checkpointing": ("fp32", True, False), "fp32 no-checkpointing": ("fp32", False, False),
            "bf16 checkpointing": ("bf16", True, False), "bf16 no-checkpointing": ("bf16", False, False),
            "bf16 checkpointing control-token rows": ("bf16", True, True)}


def run(precision: str, checkpointing: bool, token_rows: bool, steps: int, extra: list, work: str) -> dict:
    args = [sys.executable, str(SCRIPT), f"--model_name={ROOT / 'models' / 'gemma-3-270m'}", f"--max_steps={steps}",
            "--logging_steps=1", "--save_steps=0", "--eval_fraction=0.0", f"--precision={precision}",
            f"--gradient_checkpointing={checkpointing}", f"--train_control_tokens={token_rows}", f"--output_dir={work}",
            *extra]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"})
    if result.returncode != 0:
        raise SystemExit(result.stdout[-2000:] + result.stderr[-2000:])
    rows = [m.groups() for m in STEP.finditer(result.stdout)]
    rates = [float(r[2].replace(",", "")) for r in rows]
    return {"precision": precision, "gradient_checkpointing": checkpointing, "control_token_rows": token_rows,
            "steps": len(rows),
            "tokens_per_s": statistics.median(rates[2:] or rates), "peak_memory_gib": float(rows[-1][3]),
            "losses": [float(r[1]) for r in rows]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_seq_length", type=int, default=1024)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of variants to run")
    parser.add_argument("--out", default="", help="results file; default bench/results/cpu-train-<cpu>-<date>.json")
    args = parser.parse_args()
    extra = [f"--batch_size={args.batch_size}", "--gradient_accumulation_steps=1",
             f"--max_seq_length={args.max_seq_length}", "--learning_rate=5e-4"]
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for name in args.variants.split(","):
            results[name] = run(*VARIANTS[name], args.steps, extra, work)
            r = results[name]
            print(f"{name:24s} {r['tokens_per_s']:8.0f} tok/s  peak {r['peak_memory_gib']:5.2f} GiB  "
                  f"losses {' '.join(f'{x:.3f}' for x in r['losses'])}", flush=True)
    record = {"benchmark": "cpu_train", "cpu": cpu_name(), "cores": os.cpu_count(),
              "date": datetime.date.today().isoformat(), "settings": extra + [f"--max_steps={args.steps}"],
              "results": results, "versions": versions(("torch", "transformers", "trl", "peft"))}
    write_results(record, args.out, "cpu-train")


if __name__ == "__main__":
    main()
