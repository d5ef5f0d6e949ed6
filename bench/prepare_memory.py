"""Benchmark: peak memory and time of the script's data preparation against the size of the data.

    python bench/prepare_memory.py                          # 1,000,000 conversations (about 20 minutes here)
    python bench/prepare_memory.py --n 10000 100000         # several sizes
    python bench/prepare_memory.py --n 300000 --script OLD  # another version of the script, for comparison

Writes N synthetic conversations of about 500 tokens (bench/prepare_speed.py's, seeded) as one JSONL file,
then runs the real script on it in prepare-only mode (read, validate, tokenize and mask, summarise, write
prepared.jsonl), as a user would, with the small model's tokenizer. While it runs, the memory of the script's
process and all its children (the tokenizing workers) is sampled every second from /proc:

- anonymous memory (Pss_Anon): what the data preparation itself holds, which must fit in RAM;
- resident memory (Pss): anonymous memory plus the pages of memory-mapped files (Arrow files, libraries) the
  kernel happens to hold, which it drops again under pressure.

Both are proportional: a page shared by k processes counts 1/k in each (forked workers share their parent's
pages), so the sum over the processes is the memory they take together.

The figures, with the CPU and library versions, go to bench/results/prepare-memory-<cpu>-<date>.json.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, ROOT, SCRIPT, cpu_name, memory_kib, slug, tree, versions
from prepare_speed import synthesise

PACKAGES = ("datasets", "transformers", "tokenizers", "pyarrow")


def write_data(path: Path, n: int, seed: int = 0) -> None:
    """n conversations as JSONL, made and written in chunks (the benchmark itself stays small)."""
    with path.open("w") as f:
        for start in range(0, n, 10_000):
            for conversation in synthesise(min(10_000, n - start), seed + start):
                f.write(json.dumps(conversation) + "\n")


def run(script: Path, data: Path, out: Path, model: str) -> dict:
    command = [sys.executable, str(script), f"--model_name={model}", f"--data_path={data}", "--prepare_only=True",
               f"--output_dir={out}", "--run_name=bench", "--preview_examples=0", "--max_seq_length=4096"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "NO_COLOR": "1"}
    start = time.time()
    log = out.with_suffix(".log")  # a file, not a pipe: a full pipe would stop the script until it is read
    out.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        process = subprocess.Popen(command, cwd=script.parent.parent, stdout=sink, stderr=subprocess.STDOUT, env=env)
        peak_anon = peak_rss = 0
        while process.poll() is None:
            anon, rss = memory_kib(tree(process.pid))
            peak_anon, peak_rss = max(peak_anon, anon), max(peak_rss, rss)
            time.sleep(1.0)
    output = log.read_text()
    if process.returncode != 0:
        raise SystemExit(f"the script failed:\n{output[-3000:]}")
    summary = [line.strip() for line in output.splitlines() if line.startswith("  ") and "  " in line.strip()]
    return {"seconds": round(time.time() - start, 1), "peak_anonymous_gib": round(peak_anon / 2**20, 2),
            "peak_resident_gib": round(peak_rss / 2**20, 2), "summary": summary}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1_000_000], help="numbers of conversations")
    parser.add_argument("--script", type=Path, default=SCRIPT, help="the script to measure (default: this one)")
    parser.add_argument("--model", default=str(ROOT / "models" / "gemma-3-270m"))
    parser.add_argument("--label", default="", help="a name for this version of the script in the results")
    parser.add_argument("--out", type=Path, default=None, help="results file (default: bench/results/...)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT / "outputs" if (ROOT / "outputs").is_dir() else None) as work:
        for n in args.n:
            data = Path(work) / f"conversations-{n}.jsonl"
            write_data(data, n)
            size = data.stat().st_size
            result = run(args.script.resolve(), data, Path(work) / f"out-{n}", args.model)
            row = {"conversations": n, "file_gib": round(size / 2**30, 3), **result}
            print(f"{n:>10,} conversations ({row['file_gib']:.2f} GiB JSONL): {row['seconds']:>7.1f} s, peak anonymous "
                  f"{row['peak_anonymous_gib']:.2f} GiB, peak resident {row['peak_resident_gib']:.2f} GiB", flush=True)
            rows.append(row)
            data.unlink()
    record = {"benchmark": "prepare_memory", "date": datetime.date.today().isoformat(), "cpu": cpu_name(),
              "cpus": os.cpu_count(), "script": str(args.script), "label": args.label, "versions": versions(PACKAGES),
              "results": rows}
    name = f"prepare-memory-{slug(args.label) + '-' if args.label else ''}{slug(cpu_name())}-{record['date']}.json"
    out = args.out or RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
