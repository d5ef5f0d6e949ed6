"""The control tokens a base model has not learned (its chat template's <end_of_turn>): found by the base model's
own probability where the replies need them, and trained as embedding rows (TRAIN_CONTROL_TOKENS)."""

import os
from collections import Counter

from .chat_format import control_token_ids
from .errors import UserError


UNLEARNED = 0.01  # a control token the base model gives less than this probability where replies need it


def generated_control_tokens(tokenizer, dataset, examples: int = 2000) -> list[int]:
    """The control tokens the replies must produce (their closing, and any other the template trains), read off
    the labels of the first examples."""
    control = control_token_ids(tokenizer)
    found = set()
    for labels in dataset.select(range(min(examples, len(dataset))))["labels"]:
        found.update(t for t in labels if t in control)
    return sorted(found)


def token_probabilities(model, dataset, ids: list[int], examples: int = 8, max_len: int = 1024) -> dict[int, float]:
    """The model's mean probability of each token in ids at the places the first examples train it.

    Logits are computed at those places only (logits_to_keep), never for the whole (tokens x vocabulary)."""
    import torch

    total, seen = Counter(), Counter()
    model.eval()
    with torch.no_grad():
        for row in dataset.select(range(min(examples, len(dataset)))):
            labels = row["labels"][:max_len]
            at = [p for p in range(1, len(labels)) if labels[p] in ids]
            if not at:
                continue
            inputs = torch.tensor([row["input_ids"][:max_len]], device=model.device)
            keep = torch.tensor([p - 1 for p in at], device=model.device)  # the logits at p - 1 predict token p
            probs = model(input_ids=inputs, logits_to_keep=keep).logits[0].float().softmax(-1)
            for k, p in enumerate(at):
                total[labels[p]] += probs[k, labels[p]].item()
                seen[labels[p]] += 1
    return {t: total[t] / seen[t] for t in seen}


def control_tokens_to_train(model, tokenizer, train_set, cfg: dict, state, log) -> dict[int, float]:
    """The control tokens whose embedding rows are trained too (TRAIN_CONTROL_TOKENS), with the base model's
    probability of each where the data needs it, said in one line.

    A base model has never seen its chat template's tokens. Gemma 3 270M gives <end_of_turn> a probability of
    about 1e-8 where replies end, and LoRA on the layers alone raises it slowly (measured on the sample data:
    1.4e-3 after 100 steps), so the fine-tuned model runs on instead of stopping. Training the token's own row
    (one vector of the embedding, tied to the LM head) fixes that at the cost of a few thousand parameters.
    "auto" trains the rows of the tokens the base model gives less than UNLEARNED where the data needs them; an
    instruct model that knows its template trains nothing extra and keeps a plain LoRA adapter."""
    if cfg["TRAIN_CONTROL_TOKENS"] is False:
        return {}
    ids = generated_control_tokens(tokenizer, train_set)
    if not ids:
        return {}
    # The probe and the tied rows need the whole model in every process: DDP has it, FSDP and DeepSpeed shard it.
    if any(os.environ.get(f"ACCELERATE_USE_{engine}", "").lower() == "true" for engine in ("FSDP", "DEEPSPEED")):
        if cfg["TRAIN_CONTROL_TOKENS"] is True:
            raise UserError("train_control_tokens=True does not work with FSDP or DeepSpeed, which shard the "
                            "embedding; set it to False, or 'auto', which skips it there")
        return {}
    if not getattr(model, "is_quantized", False):
        model.to(state.device)  # where the trainer would put it
    probs = token_probabilities(model, train_set, ids)
    chosen = ids if cfg["TRAIN_CONTROL_TOKENS"] is True else [t for t in ids if probs.get(t, 1.0) < UNLEARNED]
    if not chosen:
        return {}
    found = ", ".join(f"{tokenizer.convert_ids_to_tokens(t)} (p={probs.get(t, float('nan')):.1e})" for t in chosen)
    if model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        if all(probs.get(t, 1.0) >= UNLEARNED for t in chosen):  # asked for (True), but the model knows them
            log(f"WARNING: train_control_tokens=True, but the rows of {found} cannot be trained here (the LM head "
                "is not tied to the embeddings); the model already gives them their place, so LoRA alone is trained")
            return {}
        log(f"WARNING: the base model has not learned the control tokens its replies end with: {found}, where the "
            "data needs them. Their rows cannot be trained here (the LM head is not tied to the embeddings), so "
            "the fine-tuned model may not stop until LoRA has learned them: train longer, or start from the "
            "instruct model")
        return {}
    log(f"control tokens: {found} where the replies need them under the base model: their embedding rows are "
        "trained too (TRAIN_CONTROL_TOKENS)")
    return {t: probs.get(t, 1.0) for t in chosen}
