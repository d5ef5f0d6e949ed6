"""Replies to held-out prompts by the base and the fine-tuned model: stop rate, length, samples.md."""

import contextlib
import json
from pathlib import Path

from .chat_format import ChatFormat, prompt_text
from .examples import for_template
from .validation import conversation_tools


def generate_replies(model, tokenizer, fmt: ChatFormat, prompts: list, stop_ids: list, max_new_tokens: int,
                     batch_tokens: int = 16384, batch_size: int = 32) -> list[dict]:
    """Greedy replies to prompts (lists of messages ending with a user turn), rendered as in training.

    Each is {"text", "tokens" (generated before the stop token), "stopped" (ended with a stop token within
    max_new_tokens)}, in the order of the prompts. Batches are padded on the left, so every prompt ends where
    generation starts. They are filled in order of length, up to batch_size prompts and batch_tokens padded
    tokens: few batches (each step of generate costs about the same for 8 rows as for 16 on a CPU), and a long
    prompt does not make many short ones pay for its padding."""
    import torch

    texts = [prompt_text(tokenizer, fmt, for_template(p, fmt), conversation_tools(p)) for p in prompts]
    # the template wrote BOS already: no special tokens are added again
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    batches = [[]]
    for i in order:
        if batches[-1] and (len(batches[-1]) == batch_size
                            or (len(batches[-1]) + 1) * (lengths[i] + max_new_tokens) > batch_tokens):
            batches.append([])
        batches[-1].append(i)
    out = [None] * len(texts)
    # The LM head gets the last position of each prompt, a strided view of the batch's hidden states. On the CPU,
    # PyTorch multiplies a strided bf16 input by a frozen weight through a slow path that allocated 3.5 GB and
    # took 12 s per batch here (Gemma 3 270M, 13 prompts of up to 1008 tokens), against 0.05 s for a contiguous
    # copy of the same 13 rows.
    contiguous = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: (args[0].contiguous(), *args[1:]))
    try:
        for batch in batches:
            inputs = tokenizer([texts[i] for i in batch], add_special_tokens=False, padding=True,
                               padding_side="left", return_tensors="pt").to(model.device)
            with torch.no_grad():
                generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                           eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)
            for i, row in zip(batch, generated[:, inputs["input_ids"].shape[1]:].tolist()):
                end = next((n for n, t in enumerate(row) if t in stop_ids), None)
                kept = row if end is None else row[:end]
                out[i] = {"text": tokenizer.decode(kept, skip_special_tokens=True).strip(), "tokens": len(kept),
                          "stopped": end is not None}
    finally:
        contiguous.remove()
    return out


@contextlib.contextmanager
def merged(model):
    """The adapter merged into the weights for a while: generation at the base model's speed. Unmerged, every
    step would add the LoRA products and copy the embedding to put in trained token rows (TRAIN_CONTROL_TOKENS).
    A 4-bit base stays unmerged: merging into it would round the weights."""
    quantized = getattr(model.get_base_model(), "is_quantized", False)
    if not quantized:
        model.merge_adapter()
    try:
        yield model
    finally:
        if not quantized:
            model.unmerge_adapter()


def reply_report(model, tokenizer, fmt: ChatFormat, conversations: list, cfg: dict, run_dir: Path, log) -> dict:
    """Replies to the last user turn of held-out conversations, by the base model and the fine-tuned one.

    "My fine-tuned model never stops" is the commonest complaint about chat fine-tuning, so every run with an eval
    set measures it: the share of replies that end with the end-of-turn token within REPLY_MAX_TOKENS, their mean
    length against the references', and the share that open as the references do (their first two words).
    "Before" is the same model with the LoRA adapter switched off, which is exactly the base model (the adapter
    starts as a zero update), so no copy of the weights is needed. Writes samples.md and replies.json."""
    prompts, references, ref_tokens, too_long = [], [], [], 0
    for conversation in conversations:
        if len(prompts) == cfg["REPLY_PROMPTS"]:
            break
        last_user = max(i for i, m in enumerate(conversation) if m["role"] == "user")
        answer = next(m for m in conversation[last_user + 1:] if m["role"] == "assistant")
        if answer.get("tool_calls"):  # a reply that calls a tool: its stop is a call, not the end of a turn
            continue
        reference = for_template([answer], fmt)[0]["content"] if fmt.reasoning_field else answer["content"]
        n_tokens = len(tokenizer(reference, add_special_tokens=False)["input_ids"])
        if n_tokens > cfg["REPLY_MAX_TOKENS"]:  # stopping can only be judged where the reference fits the limit
            too_long += 1
            continue
        prompts.append(conversation[:last_user + 1])
        references.append(reference)
        ref_tokens.append(n_tokens)
    if not prompts:
        log(f"no held-out reply is as short as reply_max_tokens={cfg['REPLY_MAX_TOKENS']}: no replies measured")
        return {}
    stop_ids = list(model.generation_config.eos_token_id)
    model.eval()
    replies = {}
    for label in ("before", "after"):
        with model.disable_adapter() if label == "before" else merged(model):
            replies[label] = generate_replies(model, tokenizer, fmt, prompts, stop_ids, cfg["REPLY_MAX_TOKENS"])

    def opening(text):
        return " ".join(text.split()[:2])

    report = {"prompts": len(prompts), "left_out_longer_references": too_long, "max_new_tokens": cfg["REPLY_MAX_TOKENS"],
              "reference_mean_tokens": sum(ref_tokens) / len(ref_tokens)}
    for label, rows in replies.items():
        report[label] = {
            "stop_rate": sum(r["stopped"] for r in rows) / len(rows),
            "mean_tokens": sum(r["tokens"] for r in rows) / len(rows),
            "same_opening": sum(opening(r["text"]) == opening(ref) for r, ref in zip(rows, references)) / len(rows)}
    rows = [{"prompt": prompt[-1]["content"], "messages": prompt, "reference": reference, "before": before,
             "after": after}
            for prompt, reference, before, after in zip(prompts, references, replies["before"], replies["after"])]
    (run_dir / "replies.json").write_text(json.dumps({**report, "replies": rows}, indent=1) + "\n")
    left_out = f"; {too_long} whose reference reply is longer left out" if too_long else ""
    table = [f"Replies to {len(prompts)} held-out prompts (greedy, at most {cfg['REPLY_MAX_TOKENS']} tokens{left_out}):",
             f"  {'':30} {'before':>8} {'after':>8} {'reference':>10}",
             f"  {'stopped at the end of turn':30} {report['before']['stop_rate']:>8.0%} "
             f"{report['after']['stop_rate']:>8.0%}",
             f"  {'mean length (tokens)':30} {report['before']['mean_tokens']:>8.1f} {report['after']['mean_tokens']:>8.1f}"
             f" {report['reference_mean_tokens']:>10.1f}",
             f"  {'open like the reference':30} {report['before']['same_opening']:>8.0%} "
             f"{report['after']['same_opening']:>8.0%}"]
    for line in table:
        log(line)
    if report["after"]["stop_rate"] < report["before"]["stop_rate"]:
        log(f"WARNING: the fine-tuned model stops less often than the base model did "
            f"({report['after']['stop_rate']:.0%} against {report['before']['stop_rate']:.0%}): check that the data's "
            "replies end where they should, or train longer")
    blocks = ["# Sample replies\n", "\n".join(table) + "\n"]
    for n in range(min(cfg["SAMPLE_REPLIES"], len(prompts))):
        before, after = replies["before"][n], replies["after"][n]
        blocks.append(f"## Conversation {n + 1}\n\n**User:** {prompts[n][-1]['content']}\n\n"
                      f"**Before training:** {before['text']}{'' if before['stopped'] else ' (cut)'}\n\n"
                      f"**After training:** {after['text']}{'' if after['stopped'] else ' (cut)'}\n\n"
                      f"**Reference:** {references[n]}\n")
    (run_dir / "samples.md").write_text("\n".join(blocks))
    return report
