"""Merging a run's LoRA adapter into its base model: a standalone folder (safetensors, tokenizer with its chat
template, the run's generation config) that transformers, vLLM and the GGUF converter load. Used by
scripts/merge_adapter.py and scripts/export.py."""

import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError
from .model_setup import base_problem
from .run_folder import trained_in_4bit

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def check_run_folder(run_dir: Path) -> dict:
    """The adapter's config; the folder must hold a LoRA adapter."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such folder; pass a run folder of multi_turn_finetuning.py")
    config_file = run_dir / "adapter_config.json"
    if not config_file.exists() or not any((run_dir / f).exists() for f in ADAPTER_WEIGHTS):
        raise UserError(f"{run_dir} holds no LoRA adapter (adapter_config.json and {ADAPTER_WEIGHTS[0]}); "
                        "pass the folder of a finished run, or one of its checkpoint-N folders")
    adapter_config = json.loads(config_file.read_text())
    if adapter_config.get("peft_type", "LORA") != "LORA":
        raise UserError(f"{run_dir}: the adapter is {adapter_config['peft_type']}, not LoRA; only LoRA can be merged")
    return adapter_config


def check_output_folder(out: Path) -> None:
    """Refuse to touch an existing folder with anything in it: it may be another model or a previous merge."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is a file; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; it is never overwritten: choose another --out or "
                        "delete that folder yourself")


def check_base_unquantized(base: str, source: str) -> None:
    """A base stored quantized (e.g. a "-bnb-4bit" upload) has no full-precision weights to merge into."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as error:  # a moved folder, a relative path from another directory, no hub access
        raise UserError(base_problem(base, source, error)) from None
    quantization = getattr(config, "quantization_config", None)
    if quantization:
        method = quantization.get("quant_method", "?") if isinstance(quantization, dict) else type(quantization).__name__
        raise UserError(f"the base model {base!r} is stored quantized ({method}); merging needs its unquantized "
                        "original: pass --base=<the bf16/fp16 model it was made from>")

def merge(run_dir: Path, base: str, dtype_name: str):
    """Load the base unquantized in `dtype_name`, apply the adapter and fold it into the weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype_name]
    # No quantization_config and no device_map: full-precision weights on the CPU, whatever training used.
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    model = PeftModel.from_pretrained(model, run_dir)
    # safe_merge checks every merged weight for NaN/inf before it replaces the original.
    return model.merge_and_unload(safe_merge=True)


def save(model, run_dir: Path, out: Path, info: dict) -> None:
    """Write weights, tokenizer, generation config and a note of where they came from, all at once.

    Everything goes to a hidden folder beside `out` first and is renamed into place at the end, so
    a crash or Ctrl-C never leaves a half-written model at `out` (which would then be refused).
    """
    from transformers import AutoTokenizer, GenerationConfig

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the model folder should be like any other
    try:
        if (run_dir / "generation_config.json").exists():
            # the run's generation config stops at the end-of-turn token, not only at <eos>
            model.generation_config = GenerationConfig.from_pretrained(run_dir)
        model.save_pretrained(staging)  # safetensors, shards above the default size
        tokenizer_source = run_dir if (run_dir / "tokenizer_config.json").exists() else info["base"]
        AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(staging)
        (staging / "merge_info.json").write_text(json.dumps(info, indent=1) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked before the merge
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def merge_run(run_dir: Path, out: Path, base: str | None = None, dtype: str = "bfloat16", log=print) -> Path:
    """Check the run folder, the output folder and the base, merge, and save to `out` (never overwritten). `base`
    overrides the adapter's base_model_name_or_path."""
    import warnings

    adapter_config = check_run_folder(run_dir)
    check_output_folder(out)
    source = "--base" if base else f"{run_dir}/adapter_config.json"
    base = base or adapter_config.get("base_model_name_or_path")
    if not base:
        raise UserError(f"{run_dir}/adapter_config.json names no base model; pass --base=PATH_OR_HUB_ID")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    check_base_unquantized(base, source)
    qlora = trained_in_4bit(run_dir)
    if qlora:
        log(f"QLoRA run (LOAD_IN_4BIT=True): merging into the unquantized {dtype} base weights, not the 4-bit "
            "ones used in training; the merged model can differ slightly from 4-bit base + adapter")
    log(f"merging {run_dir} into {base} ({dtype}) ...")
    model = merge(run_dir, base, dtype)
    info = {"base": base, "adapter": str(run_dir), "dtype": dtype, "trained_in_4bit": qlora,
            "lora_r": adapter_config.get("r"), "lora_alpha": adapter_config.get("lora_alpha")}
    save(model, run_dir, out, info)
    log(f"saved the merged model to {out}")
    return out


def add_arguments(parser, suffix: str) -> None:
    """The command-line arguments of a merge (merge_adapter.py, export.py): the run, the output folder (default:
    the run folder's name + suffix), the base model and the merged weights' dtype."""
    parser.add_argument("run_dir", type=Path, help="run folder (or checkpoint-N folder) holding the LoRA adapter")
    parser.add_argument("--out", type=Path, help=f"folder to write; default: the run folder's name + '{suffix}'")
    parser.add_argument("--base", help="base model (hub id or folder); default: adapter_config.json's")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="weights of the merged model (default bfloat16; float32 for an exact CPU merge)")
