"""Benchmark: QLoRA (LOAD_IN_4BIT=True, bitsandbytes' CPU kernels) against bf16 LoRA from the same start, on the CPU.

    python bench/qlora_compare.py              # 20 steps each on the sample data, the small real model
    python bench/qlora_compare.py --steps 4    # quick

The real script runs twice with the same seed, data, batches and settings (LoRA dropout off, so that the only
difference is the base weights: bf16, or NF4 with double quantisation computed in bf16): every step's loss
from each run's metrics.jsonl side by side, the peak resident memory of each run (the process's own, read by
the script's progress line) and its wall time. The figures go to bench/results/qlora-vs-lora-<cpu>-<date>.json.
"""

import argparse
import datetime
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, ROOT, SCRIPT, cpu_name, slug, versions


def run(name: str, out: Path, steps: int, extra: list[str]) -> dict:
    command = [sys.executable, str(SCRIPT), f"--model_name={ROOT / 'models' / 'gemma-3-270m'}",
               f"--output_dir={out}", f"--run_name={name}", f"--max_steps={steps}", "--batch_size=4",
               "--gradient_accumulation_steps=1", "--max_seq_length=512", "--learning_rate=5e-4", "--lora_dropout=0.0",
               "--logging_steps=1", "--save_steps=0", "--preview_examples=0", "--reply_prompts=0", "--seed=42", *extra]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    losses = [json.loads(line)["loss"] for line in (out / name / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    memory = [float(m) for m in re.findall(r"\| mem ([\d.]+) GiB", result.stdout)]
    return {"losses": losses, "peak_memory_gib": max(memory), "seconds": round(seconds, 1),
            "weights": next((line for line in result.stdout.splitlines() if line.startswith("weights:")), "bf16")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="", help="results file; default bench/results/qlora-vs-lora-<cpu>-<date>.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        lora = run("lora", Path(work), args.steps, ["--precision=bf16"])
        qlora = run("qlora", Path(work), args.steps, ["--precision=bf16", "--load_in_4bit=True"])
    print(f"{'step':>4} {'bf16 LoRA':>10} {'QLoRA':>10}")
    for step, (a, b) in enumerate(zip(lora["losses"], qlora["losses"]), 1):
        print(f"{step:>4} {a:>10.4f} {b:>10.4f}")
    for name, r in (("bf16 LoRA", lora), ("QLoRA", qlora)):
        print(f"{name:>9}: peak {r['peak_memory_gib']:.2f} GiB, {r['seconds']:.0f} s; {r['weights']}")
    date = datetime.date.today().isoformat()
    record = {"benchmark": "qlora_compare", "cpu": cpu_name(), "date": date, "steps": args.steps,
              "versions": versions(("torch", "transformers", "peft", "trl", "bitsandbytes")),
              "lora": lora, "qlora": qlora}
    out = Path(args.out) if args.out else RESULTS / f"qlora-vs-lora-{slug(cpu_name())}-{date}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
