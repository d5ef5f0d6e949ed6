"""Chat in the terminal with a fine-tuned model: a run folder of multi_turn_finetuning.py (base model +
LoRA adapter) or a folder written by merge_adapter.py.

    python scripts/chat.py outputs/20261124-093000                       # interactive chat
    python scripts/chat.py outputs/20261124-093000 --prompt "Hello!"     # one reply, then exit
    python scripts/chat.py outputs/20261124-093000 --system "Answer briefly." --temperature 0.7
    python scripts/chat.py outputs/20261124-093000 --base models/gemma-3-270m   # base moved or renamed
    python scripts/chat.py outputs/20261124-093000-merged                # a merged model folder

The base model of an adapter is read from adapter_config.json (base_model_name_or_path); --base
overrides it. Each turn the whole conversation is rendered again with the tokenizer's chat template,
exactly as in training, and generation stops at the end-of-turn token saved in the run folder's
generation_config.json. Replies are printed as they are generated. Greedy decoding by default
(--temperature 0): the same question always gets the same answer, which is what you want when
judging a fine-tune.

Interactive commands: /reset starts a new conversation, /exit (or Ctrl-D) quits. Ctrl-C while a reply
is being written stops that reply and drops the question from the history; Ctrl-C at the prompt quits.
"""

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


sys.path.insert(0, str(Path(__file__).resolve().parent))  # the package beside this file: scripts/multiturn/
from multiturn.chat_format import prompt_text  # noqa: E402  (the same rendering as training)
from multiturn.template_probes import detect_chat_format  # noqa: E402
from multiturn import errors  # noqa: E402
from multiturn.errors import UserError  # noqa: E402
from multiturn.model_setup import (  # noqa: E402  (the model loaded as training loaded it)
    as_id_list, cpu_has_native_bf16, load_base, quantization_config, quantization_problem, quantized_placement,
    run_tokenizer,
)
from multiturn.run_folder import template_kwargs, trained_in_4bit  # noqa: E402


# ----------------------------------------------------------------------------------------------------
# what is in the folder (decided before torch is imported, so mistakes are reported at once)


def inspect_folder(path: Path, base: str | None) -> dict:
    """Return {"kind": "adapter"|"model", "base": base model name or None, "qlora": bool}."""
    if not path.is_dir():
        raise UserError(f"{path}: no such folder; pass a run folder of multi_turn_finetuning.py or a merged model")
    if (path / "adapter_config.json").exists():
        adapter_config = json.loads((path / "adapter_config.json").read_text())
        base = base or adapter_config.get("base_model_name_or_path")
        if not base:
            raise UserError(f"{path}/adapter_config.json names no base model; pass --base=PATH_OR_HUB_ID")
        return {"kind": "adapter", "base": base, "qlora": trained_in_4bit(path)}
    if (path / "config.json").exists() and any((path / f).exists() for f in WEIGHT_FILES):
        return {"kind": "model", "base": None, "qlora": False}
    hint = ""
    checkpoints = sorted(path.glob("checkpoint-*"), key=lambda p: p.name)
    if checkpoints:
        hint = f" It holds checkpoints of an unfinished run: pass one of them, e.g. {checkpoints[-1]}"
    raise UserError(f"{path} holds neither a LoRA adapter (adapter_config.json) nor a model (config.json and "
                    f"{WEIGHT_FILES[0]}).{hint}")


# ----------------------------------------------------------------------------------------------------
# loading


def load(path: Path, base: str | None = None, log=None) -> tuple:
    """Load (model, tokenizer, stop_ids) from a run folder or a merged model folder, ready to generate."""
    log = log or (lambda message: print(message, file=sys.stderr))
    info = inspect_folder(path, base)
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar would fill the terminal before the chat
    # peft asks the model a deprecated question while loading an adapter; the warning is noise to a user
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    cuda = torch.cuda.is_available()
    where = "CUDA (bf16)" if cuda else "CPU (fp32)"
    kwargs = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if info["kind"] == "model":
        log(f"loading model {path} on {where}")
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    else:
        kwargs.update(quantization_kwargs(info["qlora"], cuda, log))
        log(f"loading base model {info['base']} + adapter {path} on {where}")
        model = load_base(info["base"], kwargs, "--base" if base else f"{path}/adapter_config.json")
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path)
        if not info["qlora"]:  # merged: generation at the base model's speed; a 4-bit base would be rounded
            model = model.merge_and_unload()
    if cuda and "device_map" not in kwargs:
        model = model.to("cuda")
    model.eval()
    tokenizer = run_tokenizer(path, info["base"])
    return model, tokenizer, stop_token_ids(path, model, tokenizer, log)


def quantization_kwargs(qlora: bool, cuda: bool, log) -> dict:
    """A QLoRA adapter is best used on the 4-bit base it was trained with: same NF4 settings as training."""
    if not qlora:
        return {}
    if quantization_problem():
        log("note: a QLoRA run, but bitsandbytes is not installed: the base is loaded unquantized, so replies can "
            "differ slightly from the 4-bit model it was trained with")
        return {}
    return {"quantization_config": quantization_config(cuda or cpu_has_native_bf16()),
            "device_map": quantized_placement(cuda)}


def stop_token_ids(path: Path, model, tokenizer, log) -> list[int]:
    """Token ids that end a reply: the saved generation config's eos ids (they include the end-of-turn
    token, e.g. Gemma's <end_of_turn>) plus the tokenizer's end-of-sequence token."""
    from transformers import GenerationConfig

    if (path / "generation_config.json").exists():
        eos = GenerationConfig.from_pretrained(path).eos_token_id
    else:
        eos = model.generation_config.eos_token_id
        log(f"note: {path} has no generation_config.json; stopping at the base model's eos tokens {eos}")
    return list(dict.fromkeys([*as_id_list(eos), *as_id_list(tokenizer.eos_token_id)]))


# ----------------------------------------------------------------------------------------------------
# prompt and generation


def render_prompt(tokenizer, history: list[dict], system: str = "", kwargs: dict | None = None, fmt=None) -> str:
    """The conversation so far, rendered by the chat template and ending with the assistant header, exactly as
    the fine-tuning script rendered each reply's context (chat_format.py decides both, system folding included)."""
    fmt = fmt or detect_chat_format(tokenizer, kwargs or {})
    messages = ([{"role": "system", "content": system}] if system else []) + [dict(m) for m in history]
    return prompt_text(tokenizer, fmt, messages)


def generate(model, tokenizer, prompt: str, stop_ids: list[int], max_new_tokens: int = 512,
             temperature: float = 0.0, stream: bool = False) -> tuple[str, list[int], str]:
    """Generate one reply; return (text, new token ids, why it stopped: "end_of_turn" or "max_new_tokens").

    The template already wrote BOS, so the prompt is tokenized without adding special tokens again.
    """
    import torch
    from transformers import GenerationConfig, TextStreamer

    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
    config = GenerationConfig(  # a fresh config: sampling settings saved with the base would warn under greedy
        max_new_tokens=max_new_tokens, do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
        eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0],
        bos_token_id=tokenizer.bos_token_id)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
    with torch.inference_mode():
        output = model.generate(**inputs, generation_config=config, streamer=streamer)
    new_ids = output[0, inputs["input_ids"].shape[1]:].tolist()
    stopped = "end_of_turn" if new_ids and new_ids[-1] in stop_ids else "max_new_tokens"
    return tokenizer.decode(new_ids, skip_special_tokens=True).strip(), new_ids, stopped


# ----------------------------------------------------------------------------------------------------
# the terminal


def chat_loop(model, tokenizer, stop_ids, args, fmt) -> None:
    history: list[dict] = []
    print("Type a message. /reset starts over, /exit or Ctrl-D quits.", file=sys.stderr)
    while True:
        try:
            text = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if not text:
            continue
        if text == "/exit":
            return
        if text == "/reset":
            history = []
            print("(new conversation)", file=sys.stderr)
            continue
        history.append({"role": "user", "content": text})
        print("model> ", end="", flush=True)
        try:
            reply, _, stopped = generate(model, tokenizer, render_prompt(tokenizer, history, args.system, fmt=fmt),
                                         stop_ids,
                                         args.max_new_tokens, args.temperature, stream=True)
        except KeyboardInterrupt:
            history.pop()  # keep the history alternating user/assistant, as the template requires
            print("\n(reply stopped; the question was dropped)", file=sys.stderr)
            continue
        if stopped == "max_new_tokens":
            print(f"(cut at --max_new_tokens={args.max_new_tokens})", file=sys.stderr)
        history.append({"role": "assistant", "content": reply})


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="run folder (adapter) or merged model folder")
    parser.add_argument("--base", help="base model (hub id or folder); default: adapter_config.json's")
    parser.add_argument("--prompt", help="reply to this one message, print the reply and exit")
    parser.add_argument("--system", default="", help="system prompt for the conversation")
    parser.add_argument("--max_new_tokens", type=int, default=512, help="longest reply, in tokens")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); e.g. 0.7 to sample")
    args = parser.parse_args(argv)
    if args.max_new_tokens <= 0:
        raise UserError(f"--max_new_tokens must be positive, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise UserError(f"--temperature must be 0 (greedy) or positive, got {args.temperature}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    model, tokenizer, stop_ids = load(args.path, args.base)
    fmt = detect_chat_format(tokenizer, template_kwargs(args.path))
    if args.prompt is not None:
        history = [{"role": "user", "content": args.prompt}]
        _, _, stopped = generate(model, tokenizer, render_prompt(tokenizer, history, args.system, fmt=fmt), stop_ids,
                                 args.max_new_tokens, args.temperature, stream=True)
        if stopped == "max_new_tokens":
            print(f"(cut at --max_new_tokens={args.max_new_tokens})", file=sys.stderr)
        return
    chat_loop(model, tokenizer, stop_ids, args, fmt)


if __name__ == "__main__":
    errors.run(main)
