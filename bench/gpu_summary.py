"""The last part of bench/gpu_check.sh: the figures of whichever parts finished, side by side, in summary.json.

    python bench/gpu_summary.py FOLDER
"""

import json
import re
import sys
from pathlib import Path

FIELDS = ("tokens_per_s", "trained_tokens_per_s", "mfu", "peak_memory_gib", "model_tflops_per_s", "attn", "batching",
          "loss", "error", "skip")


def path_figures(folder: Path, name: str) -> dict | None:
    """One train_speed.py part's figures for its path, or None where the part wrote none (a hang, a crash)."""
    file = folder / f"{name}.json"
    if not file.exists():
        return None
    record = json.loads(file.read_text())
    path = record.get("paths", {}).get(name, {})
    return {"device": record.get("device"), **{k: path[k] for k in FIELDS if k in path}}


def script_figures(folder: Path) -> dict | None:
    """The script's own steps: its per-step losses (metrics.jsonl) and its last progress line (tok/s, memory)."""
    metrics = folder / "script-runs" / "check" / "metrics.jsonl"
    if not metrics.exists():
        return None
    losses = [json.loads(line)["loss"] for line in metrics.read_text().splitlines() if '"loss"' in line]
    log = (folder / "script.log").read_text() if (folder / "script.log").exists() else ""
    lines = re.findall(r"step +\d+/\d+ \| loss [\d.]+ \| lr \S+ \| ([\d,]+) tok/s \| mem ([\d.]+) GiB", log)
    out = {"steps": len(losses), "losses": losses, "finished": (folder / "script-runs" / "check" / "DONE").exists()}
    if lines:
        out.update(tokens_per_s_last_step=float(lines[-1][0].replace(",", "")), peak_memory_gib=float(lines[-1][1]))
    return out


def main(folder: str) -> dict:
    folder = Path(folder)
    summary = {name: path_figures(folder, name) for name in ("default", "original", "qlora")}
    summary["script"] = script_figures(folder)
    default, original = summary["default"], summary["original"]
    if default and original and "tokens_per_s" in default and "tokens_per_s" in original:
        summary["default_vs_original_tokens_per_s"] = default["tokens_per_s"] / original["tokens_per_s"]
    parts = folder / "parts.txt"
    summary["parts"] = parts.read_text().splitlines() if parts.exists() else []
    (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for name in ("default", "original", "qlora"):
        f = summary[name] or {}
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in f.items()
                          if k in ("tokens_per_s", "mfu", "peak_memory_gib", "error", "skip") and v is not None)
        print(f"{name:9} {shown or 'no figures'}")
    if "default_vs_original_tokens_per_s" in summary:
        print(f"default / original tokens/s: {summary['default_vs_original_tokens_per_s']:.2f}x")
    script = summary["script"]
    print("script    " + (f"{script['steps']} steps, losses {[round(x, 3) for x in script['losses']]}"
                          if script else "no figures"))
    print(f"wrote {folder / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1])
