"""Real chat templates of many model families, applied to the real Gemma 3 tokenizer.

Each template is given the tokenizer with the template's control tokens added as special tokens (and its
BOS/EOS strings where the template writes bos_token / eos_token), and its reasoning and tool tags as plain added
tokens, as the real tokenizers have them. The
templates come from the installed TRL package (trl/chat_templates/, originals and {% generation %}-tagged
training variants) and from tests/chat_templates/ (see SOURCES.md there)."""

import re
from pathlib import Path

import trl

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
OWN_TEMPLATES = Path(__file__).parent / "chat_templates"

# name -> (file, bos, eos, extra control tokens the template writes as plain strings)
CORPUS = {
    "gemma2": (TRL_TEMPLATES / "gemma.jinja", "<bos>", "<eos>"),
    "gemma3": (TRL_TEMPLATES / "gemma3.jinja", "<bos>", "<eos>"),
    "llama2": (OWN_TEMPLATES / "llama2_chat.jinja", "<s>", "</s>"),
    "llama3": (TRL_TEMPLATES / "llama3.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "llama3_1": (TRL_TEMPLATES / "llama3_1.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "llama3_2": (TRL_TEMPLATES / "llama3_2.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "mistral_v0_1": (OWN_TEMPLATES / "mistral_v0_1.jinja", "<s>", "</s>"),
    "mistral_v3": (OWN_TEMPLATES / "mistral_v3_large_2407.jinja", "<s>", "</s>"),
    "mistral_nemo": (OWN_TEMPLATES / "mistral_nemo_2407.jinja", "<s>", "</s>"),
    "mistral_v7": (OWN_TEMPLATES / "mistral_v7_large_2411.jinja", "<s>", "</s>"),
    "mistral_small_3_1": (OWN_TEMPLATES / "mistral_small_3_1.jinja", "<s>", "</s>"),
    "qwen1_5": (OWN_TEMPLATES / "qwen1_5.jinja", None, "<|im_end|>"),
    "qwen2_5": (TRL_TEMPLATES / "qwen2_5.jinja", None, "<|im_end|>"),
    "qwen3": (TRL_TEMPLATES / "qwen3.jinja", None, "<|im_end|>"),
    "qwen3_instruct_2507": (TRL_TEMPLATES / "qwen3_instruct_2507.jinja", None, "<|im_end|>"),
    "qwen3_5_think": (TRL_TEMPLATES / "qwen3_5_think.jinja", None, "<|im_end|>"),
    "qwen3_5_nothink": (TRL_TEMPLATES / "qwen3_5_nothink.jinja", None, "<|im_end|>"),
    "smollm3": (OWN_TEMPLATES / "smollm3.jinja", None, "<|im_end|>"),
    "phi3": (TRL_TEMPLATES / "phi3.jinja", "<s>", "<|endoftext|>"),
    "phi3_5": (TRL_TEMPLATES / "phi3_5.jinja", "<s>", "<|endoftext|>"),
    "phi3_mini_original": (OWN_TEMPLATES / "phi3_mini_original.jinja", "<s>", "<|endoftext|>"),
    "phi4": (OWN_TEMPLATES / "phi4.jinja", None, "<|im_end|>"),
    "deepseek_v3": (TRL_TEMPLATES / "deepseekv3.jinja", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "deepseek_r1_distill": (TRL_TEMPLATES / "deepseek_r1_distill.jinja", "<｜begin▁of▁sentence｜>",
                            "<｜end▁of▁sentence｜>"),
    "deepseek_coder": (OWN_TEMPLATES / "deepseek_coder.jinja", "<｜begin▁of▁sentence｜>", "<|EOT|>"),
    "gpt_oss": (TRL_TEMPLATES / "gptoss.jinja", "<|startoftext|>", "<|return|>"),
    "cohere_aya": (TRL_TEMPLATES / "cohere.jinja", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"),
    "cohere2": (TRL_TEMPLATES / "cohere2.jinja", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"),
    "command_r_plus": (OWN_TEMPLATES / "command_r_plus.jinja", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"),
    "glm4_moe": (TRL_TEMPLATES / "glm4moe.jinja", None, "<|endoftext|>"),
    "nemotron_3_nano": (TRL_TEMPLATES / "nemotron_3_nano.jinja", None, "<|im_end|>"),
    "lfm2": (TRL_TEMPLATES / "lfm2.jinja", "<|startoftext|>", "<|im_end|>"),
    "chatml": (OWN_TEMPLATES / "chatml_openhermes.jinja", None, "<|im_end|>"),
    "zephyr": (OWN_TEMPLATES / "zephyr.jinja", "<s>", "</s>"),
    "vicuna": (OWN_TEMPLATES / "vicuna_1_1.jinja", "<s>", "</s>"),
    "openchat": (OWN_TEMPLATES / "openchat_3_5.jinja", "<s>", "<|end_of_turn|>"),
}

# Strings that look like markup but are ordinary (non-special) tokens in the real tokenizers: reasoning and
# tool tags of Qwen, DeepSeek and others, XML-ish tags written as text.
NOT_SPECIAL = {"<think>", "</think>", "<tool_call>", "</tool_call>", "<tools>", "</tools>", "<tool_response>",
               "</tool_response>", "<results>", "</results>", "<co>", "</co>", "<function-name>",
               "<args-json-object>", "<code>", "</code>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"}
_CONTROL_RE = re.compile(r"<\|[^|\s'\"]{1,40}\|>|<｜[^｜]{1,40}｜>|\[/?[A-Z_]{2,30}\]|</?s>|<[a-z_]{2,30}>"
                         r"|<\|[a-z_]+>|<[a-z_]+\|>|<<SYS>>|<</SYS>>")


def control_tokens(template: str) -> list[str]:
    """The control-token strings a template writes, found by their markup."""
    found = set(_CONTROL_RE.findall(template)) - NOT_SPECIAL
    return sorted(t for t in found if not t.startswith("<<") and not t.startswith("<</"))


def template_tokenizer(base, name: str):
    """A copy of the real Gemma 3 tokenizer carrying the named template and its control tokens."""
    import copy

    path, bos, eos = CORPUS[name]
    template = path.read_text(encoding="utf-8")
    tokenizer = copy.deepcopy(base)
    specials = control_tokens(template) + [t for t in (bos, eos) if t]
    tokenizer.add_special_tokens({"additional_special_tokens": sorted(set(specials))},
                                 replace_extra_special_tokens=False)
    # reasoning and tool tags are added tokens of the real tokenizers too, though not special ones: never merged
    # with the text around them, and matched in message text alike
    tokenizer.add_tokens(sorted(t for t in NOT_SPECIAL if t in template))
    if bos:
        tokenizer.bos_token = bos
    tokenizer.eos_token = eos
    tokenizer.chat_template = template
    return tokenizer


def trained_spans(labels, ignore: int = -100) -> list[tuple[int, int]]:
    """(start, end) of each run of trained positions."""
    out, start = [], None
    for k, label in enumerate(list(labels) + [ignore]):
        if label != ignore and start is None:
            start = k
        elif label == ignore and start is not None:
            out.append((start, k))
            start = None
    return out
