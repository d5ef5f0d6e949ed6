"""Benchmark: what writing the run's report page (report.html) costs against preparing the data it shows.

    python bench/report_cost.py               # 30,000 conversations of about 500 tokens
    python bench/report_cost.py --n 2000      # quick smoke run

The same synthetic conversations as bench/prepare_speed.py, written to a JSONL file, go through the script's own
steps: validation (sources.read_train_and_eval) and tokenizing and masking (examples.prepare_dataset, the
script's NUM_PROC rule), then the page (report_page.prepared and write). Wall times of each, the page's size, and
the share of preparation the page costs go to bench/results/report-cost-<cpu>-<date>.json.
"""

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path

from common import RESULTS, ROOT, cpu_name, load_script, slug, versions
from prepare_speed import synthesise


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000, help="conversations (default 30000)")
    parser.add_argument("--model", default=str(ROOT / "models" / "gemma-3-270m"), help="tokenizer folder")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", default="", help="results file; default bench/results/report-cost-<cpu>-<date>.json")
    args = parser.parse_args()

    ft = load_script()
    from transformers import AutoTokenizer

    from multiturn import examples, preview, report_page, sources, template_probes

    quiet = lambda *a, **k: None  # noqa: E731
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "data.jsonl"
        data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in synthesise(args.n, args.seed)))
        run_dir = Path(work) / "run"
        run_dir.mkdir()
        cfg = dict(ft.CONFIG, DATA_PATH=str(data), MODEL_NAME=args.model, MAX_SEQ_LENGTH=2048)
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        t0 = time.perf_counter()
        train, _ = sources.read_train_and_eval(cfg, run_dir, run_dir / ".prepared", quiet)
        fmt = template_probes.detect_chat_format(tokenizer)
        t1 = time.perf_counter()
        train_set, stats = examples.prepare_dataset(train.conversations, tokenizer, fmt, cfg, "train",
                                                    folder=run_dir / ".prepared")
        t2 = time.perf_counter()
        summary, holds = preview.summarize(quiet, train, None, train_set, None, stats, train.features, fmt, cfg)
        t3 = time.perf_counter()
        page = report_page.write(run_dir, report_page.prepared(run_dir, cfg, train, train_set, stats, tokenizer, fmt,
                                                               summary, holds))
        t4 = time.perf_counter()
        size = page.stat().st_size
    figures = {"conversations": args.n, "examples": len(train_set), "validate_s": round(t1 - t0, 2),
               "prepare_dataset_s": round(t2 - t1, 2), "summary_s": round(t3 - t2, 2), "report_s": round(t4 - t3, 2),
               "report_share_of_preparation": round((t4 - t3) / (t2 - t0), 4), "report_bytes": size,
               "examples_shown": min(report_page.SHOWN_EXAMPLES, len(train_set))}
    for key, value in figures.items():
        print(f"{key:30} {value}")
    record = {"benchmark": "report_cost", "cpu": cpu_name(), "date": datetime.date.today().isoformat(),
              "versions": versions(("datasets", "transformers", "tokenizers")), "figures": figures}
    out = Path(args.out) if args.out else RESULTS / f"report-cost-{slug(cpu_name())}-{record['date']}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
