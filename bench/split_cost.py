"""Benchmark: what keeping every reply in its inference context costs on a template that renders history
differently from the prompt.

    python bench/split_cost.py               # 20,000 conversations
    python bench/split_cost.py --n 300       # quick smoke run

The same synthetic conversations as bench/prepare_speed.py (2-8 messages, some with a system message) are
prepared by the script twice, on the real Gemma 3 tokenizer given two real templates of one family
(tests/template_corpus.py adds their control tokens): Qwen2.5's, which is prefix-preserving (one example per
conversation), and Qwen3's, which drops the think blocks of earlier turns and writes an empty one into the
final reply, so each reply needs its own example. Printed and recorded: examples, tokens, trained tokens and
preparation time of each; the figures go to bench/results/split-cost-<cpu>-<date>.json.
"""

import argparse
import datetime
import os
import sys
import time

from common import ROOT, cpu_name, load_script, versions, write_results
from prepare_speed import synthesise, token_totals

sys.path.insert(0, str(ROOT / "tests"))
from template_corpus import template_tokenizer  # noqa: E402  (the test corpus: real templates, their tokens)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="conversations (default 20000)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", default="", help="results file; default bench/results/split-cost-<cpu>-<date>.json")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    ft = load_script()
    from multiturn import examples, template_probes, validation
    base = AutoTokenizer.from_pretrained(ROOT / "models" / "gemma-3-270m")
    conversations, _ = validation.clean_conversations(synthesise(args.n, args.seed), "bench", strict=False)
    cfg = dict(ft.CONFIG, MAX_SEQ_LENGTH=8192)
    results = {}
    for name in ("qwen2_5", "qwen3"):
        tokenizer = template_tokenizer(base, name)
        fmt = template_probes.detect_chat_format(tokenizer)
        start = time.perf_counter()
        dataset, stats = examples.prepare_dataset(conversations, tokenizer, fmt, cfg, name)
        seconds = time.perf_counter() - start
        totals = token_totals(dataset)
        results[name] = {"prefix_preserving": fmt.prefix_preserving, "seconds": round(seconds, 2), **totals,
                         "split_stats": dict(stats)}
        print(f"{name:8s} prefix-preserving={fmt.prefix_preserving!s:5s} examples={totals['examples']:>7,} "
              f"tokens={totals['tokens']:>11,} trained={totals['trained_tokens']:>10,} {seconds:7.1f} s")
    a, b = results["qwen2_5"], results["qwen3"]
    ratio = {"examples": b["examples"] / a["examples"], "tokens": b["tokens"] / a["tokens"],
             "seconds": b["seconds"] / a["seconds"]}
    print(f"splitting costs x{ratio['examples']:.2f} examples, x{ratio['tokens']:.2f} tokens (the training compute), "
          f"x{ratio['seconds']:.2f} preparation time")
    record = {"benchmark": "split_cost", "cpu": cpu_name(), "cores": os.cpu_count(), "n": args.n,
              "date": datetime.date.today().isoformat(), "results": results, "ratio": ratio,
              "versions": versions(("datasets", "transformers", "tokenizers"))}
    write_results(record, args.out, "split-cost")


if __name__ == "__main__":
    main()
