"""Benchmark: training speed and memory of the fine-tuning path on Gemma-2-9b's architecture.

    python bench/train_speed.py                    # on a CUDA GPU: the real architecture, random bf16 weights
    python bench/train_speed.py --tiny             # CPU smoke test: a tiny Gemma-2, 2 steps per path, no figures
    python bench/train_speed.py --steps 8 --tokens_per_microbatch 8192 --paths original,default

On one H100 the full run takes about 6 to 10 minutes (the QLoRA path saves and reloads 18.5 GB of
random weights; flex attention compiles once per path); --paths runs a subset.

Gemma-2-9b is built from its config (written below; nothing is downloaded) with random weights. The
same synthetic multi-turn examples (lengths log-normal, mean about 600 tokens, tail to 4096; about half
of each example's tokens are assistant replies and trained, the rest labelled -100) are trained by:

  original   the original design: padded batches in random order, eager attention, the model's own
             full-logits cross-entropy, activation checkpointing;
  default    what scripts/multi_turn_finetuning.py does by default: attention from its choose_attention()
             (flash_attention_2 when flash-attn is installed, else flex_attention for Gemma-2 on a GPU
             whose shared memory holds flex attention's backward kernels, else eager), padding-free
             batches with flash-attn, else padded batches grouped by length; TRL's fused
             LM-head loss; non-reentrant activation checkpointing;
  qlora      the same with LOAD_IN_4BIT=True: NF4 weights, double quantisation, bf16 compute;
  candidate_flex_padding_free
             not the script's default (--padding_free=True gives it): flex attention on padding-free
             batches. transformers keeps the concatenated examples apart through their position_ids
             whenever no cache is built, which SFTTrainer ensures (use_cache=False), so this is exact
             too (see tests/test_training_math.py); it is measured to decide whether "auto" should
             choose it.

All use the script's own LoRA config, 4-bit config and optimizer settings (by default LoRA r=16,
alpha 32, dropout 0.05 on all linear layers; AdamW, fused on CUDA; gradient clipping at 1.0), bf16 autocast on bf16
weights, exactly as the script's SFTTrainer run: the model
is patched with TRL's fused LM head before PEFT wraps it, input gradients are enabled for
checkpointing, QLoRA adapters are cast to bf16, and the loss of a micro-batch is the sum of its
trained tokens' losses over the trained tokens of the whole optimizer step (SFTTrainer with
num_items_in_batch). The training loop itself is written out here, not SFTTrainer's, so that every
path sees the same examples:

- every optimizer step takes the next examples up to --tokens_per_step real tokens: the paths train
  on identical steps, at equal tokens per optimizer step;
- a step is cut into micro-batches of at most --tokens_per_microbatch tokens (--qlora_... for QLoRA),
  counting padding: rows x longest row for padded batches, the sum of lengths for padding-free ones.
  The script itself batches BATCH_SIZE examples; a token budget keeps memory comparable instead.
  "grouped" sorts a step's examples by length first (as group_by_length does), "random" does not.

Measured after --warmup steps (compilation, allocator warm-up), with torch.cuda.synchronize around
each step: tokens/s (real tokens, padding excluded), trained tokens/s, peak memory
(torch.cuda.max_memory_allocated over the measured steps, weights included) and MFU. MFU counts the
model FLOPs of LoRA training: 4N per token (forward 2N, backward to the activations 2N; the frozen
weights get no gradient; N = every matmul weight, the LM head included), 6 per LoRA parameter per
token, and causal attention (12 x heads x head_dim x attended pairs per layer, forward and backward).
Recomputation by checkpointing, padding and dequantisation are not counted. It is divided by the
GPU's dense bf16 peak (a table below, or --peak_tflops). mfu_head_on_trained_tokens counts the LM
head only for trained tokens, which is all the fused head computes (about 5% less). Flex attention
paths also run a few micro-batches of the shapes to come before the warm-up steps, so that its
compilations (first shapes, dynamic shapes, a single row) fall outside the measurement;
compiled_graphs_during_measurement shows whether any compilation still happened inside it.

Results go to bench/results/<device>-<date>.json with the library versions (--tiny: a temporary file
unless --out is given).
"""

import argparse
import contextlib
import datetime
import gc
import importlib.util
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from common import RESULTS, cpu_name, load_script, slug, versions

IGNORE = -100
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "triton", "flash-attn",
            "liger-kernel", "datasets")  # versions recorded with the figures

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# google/gemma-2-9b-it's config.json, the fields that shape compute and memory
GEMMA2_9B = dict(
    vocab_size=256000, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
    num_attention_heads=16, num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256,
    sliding_window=4096, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
    hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, max_position_embeddings=8192,
    attention_bias=False, attention_dropout=0.0, tie_word_embeddings=True,
    pad_token_id=0, eos_token_id=1, bos_token_id=2,
)
# the same architecture, small enough for a CPU smoke test (both softcaps, sliding and full layers)
TINY = dict(GEMMA2_9B, vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
            sliding_window=64, max_position_embeddings=1024)

ft = load_script()  # the script's own settings, and its package's builders: LoRA, 4-bit loading, attention choice
from multiturn import model_setup  # noqa: E402

# dense (no sparsity) bf16 tensor-core peak, FLOP/s; the first name contained in the device name wins
PEAK_BF16 = [
    ("gh200", 989e12), ("h200", 989e12), ("h100 nvl", 835e12), ("h100 pcie", 756e12), ("h100", 989e12),
    ("h800", 989e12), ("b200", 2250e12), ("a100", 312e12), ("a800", 312e12), ("l40s", 362e12),
    ("l40", 181e12), ("a6000", 155e12), ("l4", 121e12), ("a10g", 70e12), ("a10", 125e12),
]

PATHS = ("original", "default", "qlora", "candidate_flex_padding_free")


# ----------------------------------------------------------------------------------------------------
# synthetic multi-turn examples


def synthetic_examples(n: int, seed: int, mean_len: int, max_len: int, min_len: int, vocab: int) -> list[dict]:
    """Examples shaped like tokenized conversations: BOS, then alternating user (labels -100) and assistant
    (trained) turns, each behind a 3-token header; lengths log-normal (sigma 0.9) with the given mean, clipped."""
    rng = random.Random(seed)
    sigma = 0.9
    mu = math.log(mean_len) - sigma ** 2 / 2
    header = 3
    examples = []
    for _ in range(n):
        length = int(min(max_len, max(min_len, rng.lognormvariate(mu, sigma))))
        exchanges = max(1, min(rng.randint(1, 4), (length - 1) // 16))
        trained_share = rng.uniform(0.35, 0.65)
        body = length - 1 - 2 * header * exchanges  # tokens left for the messages themselves
        weights = [rng.uniform(0.5, 1.5) for _ in range(exchanges)]
        ids, labels = [2], [IGNORE]  # BOS, never trained
        for w in weights:
            size = max(2, int(body * w / sum(weights)))
            reply = max(1, round(size * trained_share))
            user_ids = [rng.randrange(3, vocab) for _ in range(header + max(1, size - reply))]
            reply_ids = [rng.randrange(3, vocab) for _ in range(header + reply)]
            ids += user_ids + reply_ids
            labels += [IGNORE] * (len(user_ids) + header) + reply_ids[header:]
        while len(ids) < length:  # rounding: the last reply takes the rest
            token = rng.randrange(3, vocab)
            ids.append(token)
            labels.append(token)
        examples.append({"input_ids": ids[:length], "labels": labels[:length]})
    return examples


def plan_steps(examples: list[dict], tokens_per_step: int, n_steps: int) -> list[list[dict]]:
    """Consecutive examples, cut into optimizer steps of at least tokens_per_step real tokens."""
    steps, current, tokens = [], [], 0
    for example in examples:
        current.append(example)
        tokens += len(example["input_ids"])
        if tokens >= tokens_per_step:
            steps.append(current)
            current, tokens = [], 0
            if len(steps) == n_steps:
                return steps
    raise ValueError("not enough synthetic examples for the requested steps")


def micro_batches(step: list[dict], budget: int, batching: str) -> list[list[dict]]:
    """Cut one optimizer step's examples into micro-batches of at most `budget` tokens, padding included."""
    items = sorted(step, key=lambda e: len(e["input_ids"]), reverse=True) if batching == "grouped" else list(step)
    batches, current = [], []
    for example in items:
        candidate = current + [example]
        lengths = [len(e["input_ids"]) for e in candidate]
        size = sum(lengths) if batching == "padding_free" else len(candidate) * max(lengths)
        if current and size > budget:
            batches.append(current)
            current = [example]
        else:
            current = candidate
    if current:
        batches.append(current)
    return batches


# ----------------------------------------------------------------------------------------------------
# FLOPs and device


def matmul_params(cfg: dict) -> int:
    """Weights that multiply every token: attention and MLP projections of all layers, and the LM head."""
    h, heads, kv, hd, inter = (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
                               cfg["head_dim"], cfg["intermediate_size"])
    per_layer = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 3 * h * inter
    return cfg["num_hidden_layers"] * per_layer + cfg["vocab_size"] * h


def attention_flops(cfg: dict, lengths: list[int]) -> float:
    """Causal attention of each example on its own, forward and backward: 3 x (QK^T + PV)."""
    total = 0.0
    window = cfg["sliding_window"]
    n_sliding = (cfg["num_hidden_layers"] + 1) // 2  # Gemma-2 alternates sliding and full layers, sliding first
    n_full = cfg["num_hidden_layers"] - n_sliding
    for n in lengths:
        full_pairs = n * (n + 1) / 2
        w = min(window, n)
        sliding_pairs = full_pairs if n <= window else w * (w + 1) / 2 + (n - w) * w
        total += 12 * cfg["num_attention_heads"] * cfg["head_dim"] * (n_full * full_pairs + n_sliding * sliding_pairs)
    return total


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    name = device_name.lower()
    for key, value in PEAK_BF16:
        if key in name:
            return value
    return None


def device_description(cuda: bool) -> str:
    if cuda:
        import torch

        return torch.cuda.get_device_name(0)
    return "cpu " + cpu_name()


# ----------------------------------------------------------------------------------------------------
# models


def gemma2_config(cfg: dict):
    from transformers import Gemma2Config

    return Gemma2Config(**cfg)


def random_model(cfg: dict, attn: str, dtype, device: str):
    """Gemma-2 with random weights, built directly on the device."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(gemma2_config(cfg), dtype=dtype, attn_implementation=attn)
    return model.to(device)  # already there: from_config builds under the device context


def quantized_random_model(cfg: dict, attn: str, work_dir: str | None, cuda: bool):
    """The script's QLoRA load (from_pretrained with its BitsAndBytesConfig) of random bf16 weights saved first,
    on the GPU, or on the CPU (bitsandbytes' CPU kernels; --tiny)."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = tempfile.mkdtemp(prefix="gemma2-random-", dir=work_dir)
    try:
        model = random_model(cfg, "eager", torch.bfloat16, "cuda" if cuda else "cpu")
        model.save_pretrained(folder, max_shard_size="4GB")
        del model
        free_memory()
        return AutoModelForCausalLM.from_pretrained(folder, quantization_config=model_setup.quantization_config(),
                                                    dtype=torch.bfloat16, attn_implementation=attn,
                                                    device_map=model_setup.quantized_placement(cuda))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def prepare_for_training(model, fused: bool, quantized: bool):
    """What SFTTrainer and Trainer do to the model before the first step, in the same order."""
    import torch
    from peft import get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    if fused:
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # SFTTrainer.__init__
    model = get_peft_model(model, model_setup.lora_config(ft.CONFIG))
    model.enable_input_require_grads()
    if quantized:  # SFTTrainer casts QLoRA adapters to bf16
        for name, param in model.named_parameters():
            if param.requires_grad and "lora_magnitude_vector" not in name:
                param.data = param.data.to(torch.bfloat16)
    kwargs = {"use_reentrant": False}  # the script's activation_checkpointing_kwargs
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.train()
    return model


def free_memory():
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------
# one path


def describe_paths(cfg: dict, cuda: bool, budget: int, qlora_budget: int, requested: list[str]) -> dict:
    """Each path's settings. "default" and "qlora" take the script's own attention choice and its
    PADDING_FREE="auto" rule (padding-free exactly when the attention is flash_attention_2)."""
    attn, why = model_setup.choose_attention(gemma2_config(cfg), "auto", cuda)
    ours = "padding_free" if attn == "flash_attention_2" else "grouped"
    specs = {
        "original": dict(attn="eager", why="the original design", batching="random", loss="full_logits",
                         quantized=False, budget=budget),
        "default": dict(attn=attn, why=why, batching=ours, loss="fused", quantized=False, budget=budget),
        "qlora": dict(attn=attn, why=why, batching=ours, loss="fused", quantized=True, budget=qlora_budget),
        "candidate_flex_padding_free": dict(attn="flex_attention", why="candidate", batching="padding_free",
                                            loss="fused", quantized=False, budget=budget),
    }
    out = {}
    for name in requested:
        spec = dict(specs[name])
        if name == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
            spec["skip"] = "bitsandbytes is not installed: skipped"
        elif name == "candidate_flex_padding_free" and not cuda:
            spec["skip"] = "flex attention has no backward on the CPU: skipped"
        elif name == "candidate_flex_padding_free" and attn == "flash_attention_2":
            spec["skip"] = "flash-attn is installed: the default path is padding-free already"
        out[name] = spec
    return out


def run_path(name: str, spec: dict, cfg: dict, plan: list[list[dict]], warmup: int, cuda: bool,
             work_dir: str | None, peak: float | None) -> dict:
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    result = {k: spec[k] for k in ("attn", "why", "batching", "loss", "quantized", "budget")}
    t0 = time.perf_counter()
    if spec["quantized"]:
        model = quantized_random_model(cfg, spec["attn"], work_dir, cuda)
    else:
        model = random_model(cfg, spec["attn"], dtype, device)
    model = prepare_for_training(model, fused=spec["loss"] == "fused", quantized=spec["quantized"])
    result["build_s"] = time.perf_counter() - t0
    trainable = [p for p in model.parameters() if p.requires_grad]
    result["lora_params"] = sum(p.numel() for p in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=ft.CONFIG["LEARNING_RATE"], weight_decay=ft.CONFIG["WEIGHT_DECAY"],
                                  fused=cuda)
    collator = DataCollatorForLanguageModeling(pad_token_id=cfg["pad_token_id"],
                                               padding_free=spec["batching"] == "padding_free")
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    n_matmul = matmul_params(cfg)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def graphs():
        try:
            from torch._dynamo.utils import counters

            return int(counters["stats"]["unique_graphs"])
        except Exception:
            return None

    def train_micro_batch(batch, num_items):
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with autocast():
            if spec["loss"] == "fused":  # SFTTrainer.compute_loss
                outputs = model(**batch, use_cache=False, fused_lm_head=True)
                loss = -outputs.log_probs.sum() / num_items
            else:  # the model's own loss on its full logits
                outputs = model(**batch, use_cache=False, num_items_in_batch=num_items)
                loss = outputs.loss
        loss.backward()
        return loss.detach()

    if spec["attn"] == "flex_attention":
        # torch.compile specialises flex attention to the first shapes it sees, recompiles once with dynamic
        # shapes, and compiles a single-row batch apart. A training run pays this once, at its start; here it is
        # paid before the timed steps: one example alone, then the first micro-batches of the first step.
        t1 = time.perf_counter()
        groups = micro_batches(plan[0], spec["budget"], spec["batching"])
        for group in [[plan[0][0]], *groups[:3]]:
            batch = collator([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in group])
            train_micro_batch(batch, max(1, int((batch["labels"][:, 1:] != IGNORE).sum())))
        optimizer.zero_grad(set_to_none=True)
        sync()
        result["compile_warmup_s"] = time.perf_counter() - t1
        print(f"  {name:<28} compile warm-up: {result['compile_warmup_s']:.1f} s", flush=True)

    measured = []
    graphs_before = None
    for i, step in enumerate(plan):
        if i == warmup:
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            graphs_before = graphs()
        sync()
        start = time.perf_counter()
        batches = micro_batches(step, spec["budget"], spec["batching"])
        collated = [collator([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in mb]) for mb in batches]
        num_items = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in collated)  # Trainer's count
        losses = [train_micro_batch(batch, num_items) for batch in collated]
        torch.nn.utils.clip_grad_norm_(trainable, ft.CONFIG["MAX_GRAD_NORM"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        seconds = time.perf_counter() - start
        lengths = [len(e["input_ids"]) for e in step]
        padded = sum(b["input_ids"].numel() for b in collated)
        loss_value = float(torch.stack(losses).sum())
        record = {"seconds": seconds, "tokens": sum(lengths), "trained_tokens": num_items, "padded_tokens": padded,
                  "micro_batches": len(batches), "examples": len(step), "loss": loss_value,
                  "attention_flops": attention_flops(cfg, lengths)}
        kind = "warm-up" if i < warmup else "measured"
        print(f"  {name:<28} step {i + 1}/{len(plan)} ({kind}): {len(batches)} micro-batches, "
              f"{record['tokens']:,} tokens ({record['tokens'] / padded:.0%} of the padded), "
              f"loss {loss_value:.3f}, {seconds:.2f} s", flush=True)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"non-finite loss at step {i + 1}")
        if i >= warmup:
            measured.append(record)

    seconds = sum(r["seconds"] for r in measured)
    tokens = sum(r["tokens"] for r in measured)
    trained = sum(r["trained_tokens"] for r in measured)
    attention = sum(r["attention_flops"] for r in measured)
    flops = (4 * n_matmul + 6 * result["lora_params"]) * tokens + attention
    # the same with the LM head counted only where a token is trained, which is all the fused head computes
    head = cfg["vocab_size"] * cfg["hidden_size"]
    flops_trained_head = (4 * (n_matmul - head) + 6 * result["lora_params"]) * tokens + 4 * head * trained + attention
    graphs_after = graphs()
    result.update({
        "measured_steps": len(measured), "seconds": seconds,
        "tokens_per_s": tokens / seconds, "trained_tokens_per_s": trained / seconds,
        "padding_efficiency": tokens / sum(r["padded_tokens"] for r in measured),
        "micro_batches_per_step": sum(r["micro_batches"] for r in measured) / len(measured),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None,
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
        "mfu_head_on_trained_tokens": flops_trained_head / seconds / peak if peak else None,
        "compiled_graphs_during_measurement": (graphs_after - graphs_before
                                               if graphs_after is not None and graphs_before is not None else None),
        "steps": measured,
    })
    return result  # the model, its optimizer and the closures holding them go with this frame


# ----------------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test with a tiny Gemma-2 (no figures)")
    parser.add_argument("--steps", type=int, default=None, help="measured optimizer steps per path (default 6; tiny 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps per path, not measured (2; tiny 1)")
    parser.add_argument("--tokens_per_microbatch", type=int, default=None, help="token budget per micro-batch, "
                        "padding included (8192; tiny 512)")
    parser.add_argument("--qlora_tokens_per_microbatch", type=int, default=None, help="the same for QLoRA (4096)")
    parser.add_argument("--tokens_per_step", type=int, default=None,
                        help="real tokens per optimizer step, the same for every path (2 x tokens_per_microbatch)")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, from {', '.join(PATHS)}")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not in the table")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--work_dir", default=None, help="where QLoRA's random weights are saved (~19 GB, removed)")
    parser.add_argument("--out", default="", help="results file (default bench/results/<device>-<date>.json)")
    args = parser.parse_args(argv)

    import torch

    requested = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in requested if p not in PATHS]
    if unknown:
        parser.error(f"unknown path(s) {unknown}; choose from {', '.join(PATHS)}")
    cuda = torch.cuda.is_available() and not args.tiny
    if not args.tiny and not cuda:
        parser.error("the full benchmark needs a CUDA GPU; run with --tiny for the CPU smoke test")
    cfg = TINY if args.tiny else GEMMA2_9B
    steps = args.steps or (2 if args.tiny else 6)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 2)
    budget = args.tokens_per_microbatch or (512 if args.tiny else 8192)
    qlora_budget = args.qlora_tokens_per_microbatch or (256 if args.tiny else 4096)
    tokens_per_step = args.tokens_per_step or 2 * budget
    mean_len, max_len = (60, 256) if args.tiny else (600, 4096)
    max_len = min(max_len, budget, qlora_budget if "qlora" in requested else budget)

    device = device_description(cuda)
    peak = peak_flops(device, args.peak_tflops) if cuda else None
    n_examples = max(64, int(3 * (steps + warmup) * tokens_per_step / mean_len))
    examples = synthetic_examples(n_examples, args.seed, mean_len, max_len, 16, cfg["vocab_size"])
    plan = plan_steps(examples, tokens_per_step, warmup + steps)
    used = [e for step in plan for e in step]
    lengths = sorted(len(e["input_ids"]) for e in used)
    trained = sum(sum(1 for x in e["labels"] if x != IGNORE) for e in used)
    data = {"examples": len(used), "mean_length": sum(lengths) / len(lengths), "median_length": lengths[len(lengths) // 2],
            "p99_length": lengths[int(0.99 * (len(lengths) - 1))], "max_length": lengths[-1],
            "trained_share": trained / sum(lengths), "tokens_per_step": tokens_per_step}
    specs = describe_paths(cfg, cuda, budget, qlora_budget, requested)

    print(f"device: {device}" + (f" (dense bf16 peak {peak / 1e12:.0f} TFLOP/s)" if peak else ""))
    print(f"model: {'tiny Gemma-2 (smoke test)' if args.tiny else 'Gemma-2-9b architecture, random weights'}, "
          f"{matmul_params(cfg) / 1e6:,.1f}M matmul parameters, {'bf16' if cuda else 'float32'}")
    print(f"data: {data['examples']} examples over {warmup} warm-up + {steps} measured steps of "
          f"{tokens_per_step:,} tokens; length mean {data['mean_length']:.0f}, median {data['median_length']}, "
          f"p99 {data['p99_length']}, max {data['max_length']}; {data['trained_share']:.0%} trained")

    def attempt(name, spec):
        """Run one path; a failure (out of memory, a kernel that does not compile) is recorded, not raised."""
        print(f"{name}: attention {spec['attn']} ({spec['why']}), {spec['batching']} batches of <= {spec['budget']} "
              f"tokens, {'fused LM-head' if spec['loss'] == 'fused' else 'full-logits'} loss"
              + (", 4-bit NF4 weights" if spec["quantized"] else ""), flush=True)
        try:
            return run_path(name, spec, cfg, plan, warmup, cuda, args.work_dir, peak)
        except Exception as error:
            traceback.print_exc()
            return {**{k: spec[k] for k in ("attn", "why", "batching", "loss", "quantized", "budget")},
                    "error": f"{type(error).__name__}: {str(error)[:2000]}"}
        finally:
            free_memory()
            torch._dynamo.reset()

    results = {}
    for name, spec in specs.items():
        if "skip" in spec:
            print(f"{name}: {spec['skip']}")
            results[name] = {"skipped": spec["skip"]}
            continue
        results[name] = attempt(name, spec)
        free_memory()  # the failed path's frames are gone once attempt() has returned
        if "error" in results[name] and name in ("default", "qlora") and spec["attn"] == "flex_attention":
            # what a user falls back to (--attn_implementation=eager) when flex attention fails here
            results[f"{name}_eager"] = attempt(f"{name}_eager", dict(spec, attn="eager",
                                                                     why="fallback after flex_attention failed"))

    def ok(name):
        return name in results and "tokens_per_s" in results[name]

    summary = {f"{name}_vs_original_tokens_per_s": results[name]["tokens_per_s"] / results["original"]["tokens_per_s"]
               for name in results if name != "original" and ok(name) and ok("original")}
    targets = None
    if not args.tiny:
        targets = {
            "default >= 2.5x original tokens/s": (summary["default_vs_original_tokens_per_s"] >= 2.5
                                                  if "default_vs_original_tokens_per_s" in summary else None),
            "default MFU >= 40%": (results["default"]["mfu"] >= 0.40
                                   if ok("default") and results["default"]["mfu"] is not None else None),
            f"default peak <= 40 GiB at {budget} tokens/micro-batch": (
                results["default"]["peak_memory_gib"] <= 40 if ok("default") else None),
            f"qlora peak <= 16 GiB at {qlora_budget} tokens/micro-batch": (
                results["qlora"]["peak_memory_gib"] <= 16 if ok("qlora") else None),
        }

    print()
    print(f"{'path':<28} {'tokens/s':>10} {'trained/s':>10} {'peak GiB':>9} {'MFU':>6} {'padding eff.':>12}")
    for name, r in results.items():
        if "tokens_per_s" not in r:
            print(f"{name:<28} {r.get('skipped') or r.get('error', '')[:80]}")
            continue
        mem = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        print(f"{name:<28} {r['tokens_per_s']:>10,.0f} {r['trained_tokens_per_s']:>10,.0f} {mem:>9} {mfu:>6} "
              f"{r['padding_efficiency']:>12.0%}")
    for key, value in summary.items():
        print(f"{key}: {value:.2f}x")
    if targets:
        for key, value in targets.items():
            print(f"target {key}: {'met' if value else 'not met' if value is not None else 'not measured'}")

    date = datetime.date.today().isoformat()
    if args.out:
        out = Path(args.out)
    elif args.tiny:
        out = Path(tempfile.mkdtemp(prefix="train-speed-")) / f"{slug(device)}-{date}-tiny.json"
    else:
        out = RESULTS / f"{slug(device)}-{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "date": date, "device": device, "tiny": args.tiny, "dense_bf16_peak_flops": peak,
        "model": {"config": cfg, "matmul_params": matmul_params(cfg), "dtype": "bfloat16" if cuda else "float32"},
        "flops_per_token": "4 x matmul_params + 6 x lora_params, plus causal attention (forward and backward)",
        "settings": {k.lower(): ft.CONFIG[k] for k in ("LORA_R", "LORA_ALPHA", "LORA_DROPOUT", "LORA_TARGET_MODULES",
                                                       "LEARNING_RATE", "WEIGHT_DECAY", "MAX_GRAD_NORM")},
        "warmup_steps": warmup, "measured_steps": steps, "tokens_per_microbatch": budget,
        "qlora_tokens_per_microbatch": qlora_budget, "data": data, "paths": results, "summary": summary,
        "targets": targets, "versions": {**versions(PACKAGES), "cuda": torch.version.cuda}, "command": sys.argv,
    }
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
