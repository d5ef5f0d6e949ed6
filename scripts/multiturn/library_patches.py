"""Where this project replaces a library's internals, all in this one module.

Each replacement of TRL was written against TRL_VERSION (fsdp_on_cpu, of accelerate, against ACCELERATE_VERSION).
REPLACED lists every private name of TRL used, with the signature it had; tests/test_library_patches.py fails when
one of them disappears or changes, so that an upgrade fails in the tests instead of silently training slower or
differently. At run time a missing name is one WARNING and the library's own path is kept (same results, more
time or memory)."""

import contextlib
import importlib
import inspect

TRL_VERSION = "1.16.0"  # the version these replacements were written against (requirements.txt pins it)
ACCELERATE_VERSION = "1.15.0"  # the version fsdp_on_cpu was written against

# the private parts of TRL read or replaced here: (module, name, its signature then, less the return annotation;
# None for a constant)
REPLACED = [
    ("trl.trainer.utils", "_use_triton", "(device: 'torch.device')"),
    ("trl.kernels.chunked_logprob", "_use_triton", "(device: 'torch.device')"),
    ("trl.trainer.utils", "_CHUNKED_LOGPROB_CHUNK_SIZE", None),
    ("trl.kernels.chunked_logprob", "TOKEN_CHUNK_SIZE", None),
    ("trl.trainer.utils", "_ChunkedLogProbFunction",
     "(ctx, hidden: 'torch.Tensor', weight: 'torch.Tensor', bias: 'torch.Tensor | None', targets: 'torch.Tensor', "
     "temperature: 'float', chunk_size: 'int', final_logit_softcapping: 'float | None' = None, "
     "logit_scale: 'float' = 1.0, outputs: 'tuple[str, ...]' = ('entropy', 'log_sum_sq_probs', 'mean_logits', "
     "'is_top1'))"),
]


def changed_internals() -> list[str]:
    """The entries of REPLACED that the installed TRL lacks or has with another signature (forward's, for the
    autograd function)."""
    changed = []
    for module_name, name, signature in REPLACED:
        try:
            value = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):
            changed.append(f"{module_name}.{name} is gone")
            continue
        if signature is not None:
            found = str(inspect.signature(value.forward if inspect.isclass(value) else value)).split(" -> ")[0]
            if found != signature:
                changed.append(f"{module_name}.{name} is now {found}")
    return changed


_warned: set = set()


def _warn_changed(what: str, log=print) -> None:
    """One WARNING per replacement that the installed TRL no longer allows."""
    if what in _warned:
        return
    _warned.add(what)
    import trl

    log(f"WARNING: {what} is off: it replaces internals of TRL {TRL_VERSION}, and TRL {trl.__version__} changed "
        f"them ({'; '.join(changed_internals()) or 'see multiturn/library_patches.py'}). Training is unchanged but "
        f"may be slower or use more memory; pin trl=={TRL_VERSION} (requirements.txt) to keep it")


def lean_cpu_lm_head(log=print) -> None:
    """On the CPU, score the LM head in small tiles, and only where a token is trained.

    TRL's fused LM head never materialises the (tokens x vocabulary) logits; on a GPU its Triton kernel works on
    tiles of 4096 tokens x 32768 words. Its CPU path uses the same tiles through torch ops, which allocate several
    float32 copies of a tile (512 MiB each): about 4 GiB of transient memory per step for a 262k vocabulary, most
    of the quick start's peak. 1024 x 8192 tiles compute the same sums in the same order of words, with 1/16 of
    the memory (measured: peak 8.6 -> 4.9 GiB for a 4 x 1024-token fp32 step of Gemma 3 270M, slightly faster).

    Off Triton devices TRL also scores every position, padding and prompt included, so that the tile shapes stay
    fixed for compilers (Neuron). Nothing compiles on the CPU, and the head is over half of a step there (262k
    words against a 270M model), so it scores the trained positions only, as it does on a GPU: the same loss,
    about a fifth less head work on the quick start's data (79% of its tokens are trained). The settings are TRL's
    own module names; a TRL without them keeps its defaults, with a WARNING."""
    if any("_ChunkedLogProbFunction" not in c for c in changed_internals()):
        _warn_changed("the lean CPU LM head", log)
        return
    import trl.kernels.chunked_logprob as kernel
    import trl.trainer.utils as trl_utils

    kernel.TOKEN_CHUNK_SIZE = 1024
    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = 8192
    if trl_utils._use_triton is kernel._use_triton:  # decides only which positions are scored; not twice
        trl_utils._use_triton = lambda device: kernel._use_triton(device) or device.type == "cpu"


def head_with_trained_rows(model):
    """The LM head of a PEFT model whose tied control-token rows are trained, made readable by TRL's fused loss.

    The loss reads lm_head.weight and lm_head.bias. PEFT's wrapper around a tied head serves the weight with the
    trained rows, but answers no bias: the head it wraps has none (tied heads don't)."""
    head = model.get_output_embeddings()
    if not hasattr(head, "bias"):
        head.bias = getattr(head.token_adapter.base_layer, "bias", None)
    return head


@contextlib.contextmanager
def row_gradients_only(head, log=print):
    """While training, the trained control-token rows of a tied LM head get their gradient without the head's.

    TRL's fused loss takes the head's weight as one tensor. With rows trained (TRAIN_CONTROL_TOKENS) that tensor
    needs a gradient, so its backward multiplies every token's logit gradient by the hidden states over the whole
    vocabulary: one more (tokens x vocabulary x hidden) product per step, and a float32 gradient the size of the
    embedding (262k x 640 for Gemma 3, 0.6 GiB; 3.4 GiB for Gemma 2 9B), of which the few trained rows are kept.
    Here the loss sees the weight without a gradient (same values, so the same loss and hidden-state gradient),
    and each trained row k gets its exact gradient from the K columns alone: d log p(y_t) / d z_tk = [y_t = k] - p_tk,
    with p_tk = exp(z_tk - log Z_t) and log Z_t = z_t,y_t - log p(y_t). Measured in bench/cpu_train.py.
    A TRL without this function keeps its own (slower, equal) path, with a WARNING."""
    import torch

    if any("_ChunkedLogProbFunction" in c for c in changed_internals()):
        _warn_changed("the row gradient of trained control tokens", log)
        yield
        return
    import trl.trainer.utils as trl_utils

    fused = trl_utils._ChunkedLogProbFunction
    adapter = head.token_adapter
    name = adapter.active_adapters[0]
    delta = adapter.trainable_tokens_delta[name]  # (K x hidden): the trained rows themselves
    index = torch.tensor(adapter.token_indices[name], device=delta.device)

    class RowGradients:
        @staticmethod
        def apply(hidden, weight, bias, targets, temperature, chunk_size, softcap=None, logit_scale=1.0, *rest):
            if not (torch.is_grad_enabled() and weight.requires_grad):
                return fused.apply(hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale, *rest)
            frozen = weight.detach()
            out = fused.apply(hidden, frozen, bias, targets, temperature, chunk_size, softcap, logit_scale, *rest)
            log_probs = out[0]
            dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(
                hidden.device.type) else hidden.dtype
            h = hidden.detach().float()

            def logits(raw, at):  # as the kernel forms them: rounded to the compute dtype, then scaled and capped
                z = raw.to(dtype).float() + (bias[at].float() if bias is not None else 0.0)
                z = z * logit_scale
                if softcap:
                    z = softcap * torch.tanh(z / softcap)
                return z / temperature

            z_rows = logits(h @ delta.float().t(), index)  # (tokens x K), with a gradient to the rows
            z_target = logits((h * frozen[targets].float()).sum(-1), targets)
            p_rows = torch.exp(z_rows.detach() - (z_target - log_probs.detach()).unsqueeze(-1))
            surrogate = (((targets.unsqueeze(-1) == index).float() - p_rows) * z_rows).sum(-1)
            return (log_probs + (surrogate - surrogate.detach()), *out[1:])  # value unchanged, gradient added

    trl_utils._ChunkedLogProbFunction = RowGradients
    try:
        yield
    finally:
        trl_utils._ChunkedLogProbFunction = fused


def fsdp_on_cpu(log=print) -> bool:
    """Let an FSDP launch config run FSDP2 on CPU processes, over gloo (configs/accelerate/cpu_fsdp_2proc.yaml).

    accelerate 1.15 switches to FSDP only for accelerator devices: with use_cpu its AcceleratorState stays
    MULTI_CPU, so `accelerate launch` of an FSDP config on CPUs trains as DDP, and the FSDP path is never run.
    torch's fully_shard itself runs on CPUs over gloo. This makes the state FSDP there, with the plugin the launch
    configured; the rest (fully_shard per decoder layer, FULL_STATE_DICT saving, RAM-efficient loading) is
    accelerate's own. Each later AcceleratorState() copies PartialState's MULTI_CPU back in, so the switch is
    made after every construction. Only under `accelerate launch` with an FSDP config (ACCELERATE_USE_FSDP)."""
    import os

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return False
    import accelerate
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    if getattr(AcceleratorState.__init__, "fsdp_on_cpu", False):
        return True
    if accelerate.__version__ != ACCELERATE_VERSION or "fsdp_plugin" not in inspect.signature(
            AcceleratorState.__init__).parameters:
        log(f"WARNING: FSDP on the CPU is off: it replaces internals of accelerate {ACCELERATE_VERSION}, and "
            f"accelerate {accelerate.__version__} is installed; the run trains as DDP. Pin accelerate=="
            f"{ACCELERATE_VERSION} (requirements.txt) to keep it")
        return False
    original = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        plugin = fsdp_plugin or getattr(self, "fsdp_plugin", None)
        if self.distributed_type == DistributedType.MULTI_CPU and plugin is not None:
            self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, plugin

    init.fsdp_on_cpu = True
    AcceleratorState.__init__ = init
    log("FSDP2 on CPU processes (gloo): the model is sharded across the processes, as on GPUs")
    return True
