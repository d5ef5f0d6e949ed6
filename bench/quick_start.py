"""Benchmark: the README's first command as a new user runs it: wall time of each phase, peak memory, and what the
run itself reports of the result (stop rate and openings of held-out replies).

    python bench/quick_start.py                      # the command, in this checkout (after scripts/setup.sh)
    python bench/quick_start.py --setup              # a fresh clone: scripts/setup.sh timed too, then the command
    python bench/quick_start.py -- --max_steps=30    # the command with settings added after configs/quick_start.json

The script runs in its own process. Its memory, with any worker processes, is sampled from /proc twice a
second as proportional set size (Pss: every page it holds, shared ones divided among the processes that share
them) and its anonymous part (what the process itself allocated, not file pages the kernel can drop); each
sample is tagged with the phase the log was in, so the peak is found where it happens. Phases run from one log
line to the next: preparation, model loading, the first evaluation, training, the last evaluation, the replies
before and after training, saving.

The figures, with the CPU and library versions, go to bench/results/quick-start-<cpu>-<date>.json.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, cpu_name, memory_kib, tree, versions, write_results

CONFIG = "configs/quick_start.json"
# each phase starts at the first log line that matches its pattern, after the phase before it
PHASES = (("start-up and data", None), ("model loading", r"attention:"), ("first evaluation", r"effective batch:"),
          ("training", r"eval  step +0 "), ("last evaluation", r"step +(\d+)/\1 "), ("replies", r"eval  step"),
          ("saving", r"Replies to"))
PACKAGES = ("torch", "transformers", "trl", "peft", "datasets")


def phase_of(line: str, current: str) -> str:
    names = [name for name, _ in PHASES]
    following = names.index(current) + 1
    if following < len(PHASES) and re.match(PHASES[following][1], line):
        return PHASES[following][0]
    return current


def run_command(root: Path, extra: list[str], out_dir: Path) -> dict:
    python = root / ".venv" / "bin" / "python" if root != ROOT else Path(sys.executable)  # the clone's own, or ours
    command = [str(python), "-u", "scripts/multi_turn_finetuning.py", f"--config={CONFIG}",
               f"--output_dir={out_dir}", "--run_name=quick-start", *extra]
    env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    start = time.time()
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    state = {"phase": PHASES[0][0]}
    peaks: dict[str, list[int]] = {}
    lines: list[tuple[float, str]] = []

    def sample():
        while process.poll() is None:
            anon, pss = memory_kib(tree(process.pid))
            peak = peaks.setdefault(state["phase"], [0, 0])
            peak[0], peak[1] = max(peak[0], anon), max(peak[1], pss)
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    starts = {state["phase"]: 0.0}
    for line in process.stdout:
        at = time.time() - start
        lines.append((at, line.rstrip("\n")))
        print(f"{at:7.1f}s {line}", end="", flush=True)
        phase = phase_of(line.rstrip("\n"), state["phase"])
        if phase != state["phase"]:
            starts[phase] = at
            state["phase"] = phase
    process.wait()
    sampler.join()
    seconds = time.time() - start
    if process.returncode != 0:
        raise SystemExit(f"the command failed (exit {process.returncode})")
    order = list(starts)
    durations = {name: round((starts[order[i + 1]] if i + 1 < len(order) else seconds) - starts[name], 1)
                 for i, name in enumerate(order)}
    path = out_dir / "quick-start" / "replies.json"  # none where no held-out reply fits reply_max_tokens
    replies = json.loads(path.read_text()) if path.exists() else {"before": {}, "after": {}}
    peak_phase = max(peaks, key=lambda p: peaks[p][1])
    return {"seconds": round(seconds, 1), "phases_s": durations,
            "peak_pss_gib": round(peaks[peak_phase][1] / 2**20, 2), "peak_phase": peak_phase,
            "peak_anonymous_gib": round(max(p[0] for p in peaks.values()) / 2**20, 2),
            "peak_pss_gib_by_phase": {p: round(v[1] / 2**20, 2) for p, v in peaks.items()},
            "stop_rate_before": replies["before"].get("stop_rate"), "stop_rate_after": replies["after"].get("stop_rate"),
            "same_opening_after": replies["after"].get("same_opening"), "prompts": replies.get("prompts", 0),
            "replies_after": [{"stopped": r["after"]["stopped"], "tokens": r["after"]["tokens"], "text": r["after"]["text"],
                               "reference": r["reference"]} for r in replies.get("replies", [])]}


def fresh_setup(work: Path) -> tuple[Path, float]:
    """A clone of this checkout's HEAD with scripts/setup.sh run in it; the setup's wall time."""
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    start = time.time()
    subprocess.run(["bash", "scripts/setup.sh"], cwd=clone, check=True)
    return clone, round(time.time() - start, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true", help="clone, run scripts/setup.sh, time it, then the command")
    parser.add_argument("--label", default="", help="a name for this measurement in the results file's name")
    parser.add_argument("--out", default="", help="results file; default bench/results/quick-start-<cpu>-<date>.json")
    parser.add_argument("extra", nargs="*", help="settings after --, added to the command")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        root, setup_s = fresh_setup(Path(work)) if args.setup else (ROOT, None)
        result = run_command(root, args.extra, Path(work) / "outputs")
    record = {"benchmark": "quick_start", "date": datetime.date.today().isoformat(), "cpu": cpu_name(),
              "cpus": os.cpu_count(), "command": f"scripts/multi_turn_finetuning.py --config={CONFIG}",
              "extra": args.extra, "setup_s": setup_s, **result,
              "total_s": round(result["seconds"] + (setup_s or 0), 1), "versions": versions(PACKAGES)}
    print(json.dumps({k: v for k, v in record.items() if k not in ("versions", "replies_after")}, indent=1))
    name = "quick-start" + (f"-{args.label}" if args.label else "")
    write_results(record, args.out, name)


if __name__ == "__main__":
    sys.exit(main())
