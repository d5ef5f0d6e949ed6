"""Merge the LoRA adapter of a fine-tuning run into its base model and save a standalone model folder.

    python scripts/merge_adapter.py outputs/20261124-093000                   # -> outputs/20261124-093000-merged, bf16
    python scripts/merge_adapter.py outputs/20261124-093000 --out models/my-chat-model
    python scripts/merge_adapter.py outputs/20261124-093000 --dtype float32   # exact merge, e.g. for CPU tests
    python scripts/merge_adapter.py outputs/20261124-093000 --base google/gemma-2-9b-it   # base moved or renamed

The folder written holds safetensors weights, the tokenizer with its chat template and the run's
generation config (whose eos ids include the end-of-turn token), so that plain
AutoModelForCausalLM.from_pretrained(folder) loads it, vLLM/TGI can serve it, and
`python scripts/chat.py FOLDER` chats with it. The base model is read from the adapter's
adapter_config.json (base_model_name_or_path); --base overrides it.

QLoRA runs (LOAD_IN_4BIT=True) are merged into the base loaded unquantized in bf16: a LoRA update
cannot be added to NF4 weights without re-quantising, which would throw most of it away. The merge
runs on the CPU and needs the whole base model in memory (2 bytes per parameter in bf16).
An existing non-empty output folder is never overwritten.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the package beside this file: scripts/multiturn/
from multiturn import errors  # noqa: E402
from multiturn.merging import add_arguments, merge_run  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# ----------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, "-merged")
    return parser.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    run_dir = args.run_dir.resolve()
    out = merge_run(run_dir, args.out or run_dir.with_name(run_dir.name + "-merged"), args.base, args.dtype)
    print(f"chat with it: python scripts/chat.py {out}")
    return out


if __name__ == "__main__":
    errors.run(main)
