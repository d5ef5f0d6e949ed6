"""The model as training, chat and merge load it: precision, attention kernel, 4-bit loading, LoRA, stop tokens, the
base model of a run."""

from pathlib import Path

from .chat_format import ChatFormat
from .errors import UserError


def choose_attention(model_config, requested: str, cuda: bool) -> tuple[str, str]:
    """Pick the fastest attention kernel that computes this model exactly; return (name, reason)."""
    softcap = getattr(model_config, "attn_logit_softcapping", None)
    if requested != "auto":
        if softcap and requested == "sdpa":
            raise UserError(f"attn_implementation='sdpa' drops {model_config.model_type}'s attention softcapping; "
                            "use 'auto', 'flash_attention_2', 'flex_attention' or 'eager'")
        return requested, "set by ATTN_IMPLEMENTATION"
    if cuda and _flash_attn_ok():
        return "flash_attention_2", "flash-attn >= 2.6.3 is installed (exact softcapping, varlen packing)"
    if softcap:
        if not cuda:
            return "eager", "CPU: flex attention has no backward here and SDPA drops softcapping"
        head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // model_config.num_attention_heads
        shared = _shared_memory_per_block()
        if head_dim > 128 and shared is not None and shared < FLEX_BACKWARD_SHARED_MEMORY:
            return "eager", (f"flash-attn not installed, and flex attention's backward for head_dim {head_dim} does not "
                             f"fit this GPU's {shared // 1024} KiB of shared memory per block; eager is exact but "
                             "slower: pip install flash-attn>=2.6.3")
        return "flex_attention", "flash-attn not installed; flex attention applies softcapping exactly"
    return "sdpa", "PyTorch scaled-dot-product attention"


# PyTorch's flex attention kernels for head_dim > 128 (Gemma-2 has 256) stage blocks of Q, K, V and their
# gradients in shared memory: the backward needs over 110 KiB per block. Data-centre cards have room (A100:
# 163 KiB, H100 and B200: 227 KiB); consumer and workstation cards (RTX 3090/4090/5090, A10G, L4, L40S: 99 KiB)
# do not, and the backward then fails to compile at the first step. Those cards get eager attention instead.
FLEX_BACKWARD_SHARED_MEMORY = 160 * 1024


def _shared_memory_per_block() -> int | None:
    """Shared memory one CUDA block may use on GPU 0 (opt-in maximum), in bytes; None if unknown."""
    import torch

    try:
        props = torch.cuda.get_device_properties(0)
        return int(getattr(props, "shared_memory_per_block_optin", 0)) or None
    except Exception:
        return None


def _flash_attn_ok() -> bool:
    try:
        from importlib.metadata import version

        from packaging.version import Version

        return Version(version("flash-attn")) >= Version("2.6.3")
    except Exception:
        return False


def batching_plan(padding_free: bool, attn: str) -> str:
    """How batches are built, for the log. Padding-free batches (examples concatenated in one row, no padding)
    are exact with every kernel in training: no cache is built there (SFTTrainer passes use_cache=False), so
    transformers reads the example boundaries from the restarting position_ids (tests/test_training_math.py).
    "auto" uses them only with flash-attn, whose varlen kernel computes each example alone; eager and SDPA would
    compute the whole concatenated row, every pair across examples included, and flex attention is unmeasured."""
    if not padding_free:
        return "padded batches of similar length (padding-free is automatic with flash-attn only)"
    if attn == "flash_attention_2":
        return "padding-free (examples concatenated, kept apart by flash-attn's varlen kernel)"
    cost = ("flex attention skips the blocks that lie across examples" if attn == "flex_attention"
            else f"{attn} attention still computes every pair across examples, then masks it")
    return (f"padding-free with {attn} attention, as set by PADDING_FREE (examples kept apart by a mask built from "
            f"their position_ids; {cost})")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix products at about twice the fp32 rate. Elsewhere bf16 is emulated and slow."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older PyTorch without these probes
        return False


def quantization_problem() -> str | None:
    """Why LOAD_IN_4BIT cannot run here, or None. Asked before any weights are read. bitsandbytes has 4-bit
    kernels for CUDA and for the CPU (since 0.46), so QLoRA runs without a GPU too (slowly)."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return "load_in_4bit=True needs bitsandbytes: pip install -r requirements.txt, or set --load_in_4bit=False"
    return None


def quantization_config(bf16: bool = True):
    """QLoRA's 4-bit loading: NF4 weights, double quantisation, bf16 compute (fp32 on a CPU without native bf16)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float32)


def quantized_placement(cuda: bool, device_index: int = 0) -> dict:
    """Where a 4-bit model is loaded: its process's GPU, or the CPU."""
    return {"": device_index if cuda else "cpu"}


def lora_config(cfg: dict):
    from peft import LoraConfig

    targets = cfg["LORA_TARGET_MODULES"]
    return LoraConfig(
        r=cfg["LORA_R"], lora_alpha=cfg["LORA_ALPHA"], lora_dropout=cfg["LORA_DROPOUT"], task_type="CAUSAL_LM",
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
    )


def model_stop_ids(model_name: str) -> tuple:
    """The model's own stop tokens from its generation config, where it has one (read before any weights)."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(model_name).eos_token_id
    except Exception:  # no generation_config.json: the tokenizer's eos is used alone
        return ()
    return tuple(as_id_list(eos))


def stop_token_ids(fmt: ChatFormat, generation_config) -> list[int]:
    """What the saved generation config stops on: the trained closing's last token, then the model's own."""
    own = as_id_list(generation_config.eos_token_id)
    return list(dict.fromkeys([fmt.closing_ids[-1], *own, *fmt.stop_ids]))


def as_id_list(eos) -> list[int]:
    """A generation config's eos_token_id (an int, a list or None) as a list."""
    return list(eos) if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []


def tokenizer_and_format(cfg: dict, log) -> tuple:
    """The model's tokenizer (its own pad token kept, else eos), its chat template (or CHAT_TEMPLATE), and what
    that template does, read off probe renderings and said in a few lines."""
    from transformers import AutoTokenizer

    from .template_probes import describe, detect_chat_format, load_chat_template

    name = cfg["MODEL_NAME"]
    if (name.startswith(("/", ".", "~")) or name.count("/") > 1) and not Path(name).expanduser().is_dir():
        raise UserError(f"MODEL_NAME={name!r}: no such folder; set --model_name to a model folder or a hub id ('org/name')")
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg["MODEL_NAME"])
    except OSError as error:  # no such folder, no hub access, a gated model without a login
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot load the tokenizer of MODEL_NAME={cfg['MODEL_NAME']!r} ({first}): set --model_name to "
                        "a local model folder, or a hub id this machine can download (check the connection, and "
                        "`hf auth login` for gated models such as Gemma and Llama)") from None
    if tokenizer.pad_token is None:  # only if missing: the model's own pad token is kept
        tokenizer.pad_token = tokenizer.eos_token
    load_chat_template(tokenizer, cfg["CHAT_TEMPLATE"])
    fmt = detect_chat_format(tokenizer, cfg["CHAT_TEMPLATE_KWARGS"], model_stop_ids(cfg["MODEL_NAME"]))
    log("chat template:")
    for line in describe(fmt):
        log(f"  {line}")
    return tokenizer, fmt


def training_precision(cfg: dict, cuda: bool, log) -> bool:
    """Whether to train in bf16 (else fp32): PRECISION, or "auto" = where the hardware computes bf16 natively."""
    import torch

    native = cuda or cpu_has_native_bf16()
    bf16 = native if cfg["PRECISION"] == "auto" else cfg["PRECISION"] == "bf16"
    if not cuda:
        why = {(True, True): "the CPU has native bf16", (False, False): "the CPU has no native bf16",
               (True, False): "as set by PRECISION; the CPU has no native bf16, so this is slow",
               (False, True): "as set by PRECISION"}[(bf16, native)]
        log(f"WARNING: no CUDA GPU found: training on the CPU in {'bfloat16' if bf16 else 'float32'} ({why}), "
            "which is only practical for small models")
    elif not torch.cuda.is_bf16_supported():
        raise UserError("this GPU has no bfloat16 support (pre-Ampere); use an A100/H100/L4/RTX 30xx or newer")
    if cfg["LOAD_IN_4BIT"] and (problem := quantization_problem()):
        raise UserError(problem)
    return bf16


def attention_and_batching(cfg: dict, cuda: bool, log) -> tuple[str, bool]:
    """The attention kernel and whether batches are padding-free, each said in one line."""
    from transformers import AutoConfig

    attn, why = choose_attention(AutoConfig.from_pretrained(cfg["MODEL_NAME"]), cfg["ATTN_IMPLEMENTATION"], cuda)
    log(f"attention: {attn} ({why})")
    padding_free = cfg["PADDING_FREE"]
    if padding_free == "auto":
        padding_free = attn == "flash_attention_2"
    log("batching: " + batching_plan(padding_free, attn))
    return attn, padding_free


def load_model(cfg: dict, attn: str, bf16: bool, device_index: int, fmt: ChatFormat, tokenizer, log=print):
    """The base model in the run's precision (4-bit with LOAD_IN_4BIT), its generation config stopping after a
    reply."""
    import warnings
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": torch.bfloat16 if bf16 else torch.float32, "attn_implementation": attn}
    if cfg["LOAD_IN_4BIT"]:
        kwargs["quantization_config"] = quantization_config(bf16)
        kwargs["device_map"] = quantized_placement(torch.cuda.is_available(), device_index)
        log("weights: 4-bit NF4 with double quantisation (bitsandbytes), computed in "
            + ("bfloat16" if bf16 else "float32") + ("" if torch.cuda.is_available() else ", on the CPU"))
    # A local folder is recorded by its absolute path in adapter_config.json, so that chat.py and
    # merge_adapter.py find the base from any working directory.
    name = cfg["MODEL_NAME"]
    model = AutoModelForCausalLM.from_pretrained(str(Path(name).resolve()) if Path(name).is_dir() else name, **kwargs)
    # peft asks the model a deprecated question while wrapping it; the warning is noise to a user
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    model.generation_config.eos_token_id = stop_token_ids(fmt, model.generation_config)  # it stops after its reply
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def load_base(name: str, kwargs: dict, source: str):
    """The base model of a run (named in `source`), or an error saying how to point at it."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as error:  # a moved folder, a relative path from another directory, no hub access
        raise UserError(base_problem(name, source, error)) from None


def base_problem(name: str, source: str, error: Exception) -> str:
    relative = "" if Path(name).is_absolute() else "; a relative path is read from the folder you run in"
    return f"cannot load the base model {name!r} named in {source} ({error}){relative}; pass --base=PATH_OR_HUB_ID"


def run_tokenizer(path: Path, base: str | None):
    """A run folder's tokenizer, which carries the chat template used in training; else the base model's."""
    from transformers import AutoTokenizer

    has_own = (path / "tokenizer_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(path if has_own or base is None else base)
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"the tokenizer of {path if has_own else base} has no chat template")
    return tokenizer
