"""A model folder the fine-tuning script can train on a machine with no hub and nothing carried but this checkout:
Gemma-2's architecture with random weights (Gemma-2-9b's layer sizes, fewer layers; or bench/train_speed.py's
tiny config), a byte-level BPE tokenizer trained here on data/conversations.json with Gemma's control tokens,
and Gemma's chat template from the installed TRL. The speed of a few real steps of the script depends on the
layer sizes, not on the weights or the vocabulary.

    python bench/script_model.py OUT_FOLDER --layers 4        # Gemma-2-9b layer sizes, 4 layers, bf16
    python bench/script_model.py OUT_FOLDER --tiny            # the tiny config, float32 (CPU)
"""

import argparse
import json
from pathlib import Path

from common import ROOT
from train_speed import GEMMA2_9B, TINY, gemma2_config

SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]  # Gemma's first ids, in order


def train_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer (offsets and round trips exact, as Llama 3's) trained on the sample data."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [m["content"] for conversation in json.loads((ROOT / "data" / "conversations.json").read_text())
             for m in conversation]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tiny", action="store_true", help="the tiny config, float32")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of Gemma-2-9b's sizes (default 4)")
    parser.add_argument("--vocab", type=int, default=4096, help="tokenizer vocabulary (default 4096)")
    args = parser.parse_args(argv)

    import torch
    import trl
    from transformers import AutoModelForCausalLM

    tokenizer = train_tokenizer(args.vocab)
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "gemma.jinja").read_text()
    cfg = dict(TINY if args.tiny else dict(GEMMA2_9B, num_hidden_layers=args.layers), vocab_size=len(tokenizer))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(gemma2_config(cfg), dtype=torch.float32 if args.tiny else torch.bfloat16)
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids("<end_of_turn>"), tokenizer.eos_token_id]
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out}: Gemma-2, {cfg['num_hidden_layers']} layers of hidden size {cfg['hidden_size']}, "
          f"vocabulary {len(tokenizer)}, {sum(p.numel() for p in model.parameters()) / 1e6:,.0f}M parameters")


if __name__ == "__main__":
    main()
