"""Shared fixtures. Everything runs on the CPU without network: the small real model is built once
from the PyPI package (scripts/prepare_small_model.py) into models/gemma-3-270m."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "multi_turn_finetuning.py"
SMALL_MODEL = ROOT / "models" / "gemma-3-270m"

sys.path.insert(0, str(ROOT / "scripts"))  # the scripts and their package, multiturn/

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ft():
    """The fine-tuning script, imported as a module: its settings (CONFIG) and main()."""
    import multi_turn_finetuning

    return multi_turn_finetuning


@pytest.fixture(scope="session")
def small_model() -> Path:
    """Path of the real Gemma 3 270M folder, built on first use."""
    if not (SMALL_MODEL / "READY").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_small_model.py")], check=True)
    return SMALL_MODEL


@pytest.fixture(scope="session")
def tokenizer(small_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(small_model)


def run_script(*overrides: str, cwd: Path = ROOT, timeout: int = 900, script: Path = SCRIPT, env: dict = None):
    """Run the real script in a subprocess; return the CompletedProcess (stdout and stderr as text)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, str(script), *overrides], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def corpus_tokenizer(tokenizer):
    """A function: template name -> the real Gemma 3 tokenizer with that template and its control tokens
    (tests/template_corpus.py), built once each."""
    from template_corpus import template_tokenizer

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = template_tokenizer(tokenizer, name)
        return cache[name]

    return get
