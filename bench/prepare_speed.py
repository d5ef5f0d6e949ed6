"""Benchmark: the script's data preparation against TRL's own `assistant_only_loss` preparation.

    python bench/prepare_speed.py               # 100,000 conversations of about 500 tokens
    python bench/prepare_speed.py --n 2000      # quick smoke run

Both sides get the same synthetic conversations (seeded, 2-8 messages, some with a system message)
and the same tokenizer (the small model's, Gemma's chat template):

- ours: `prepare_dataset` of scripts/multi_turn_finetuning.py, with the script's CONFIG and a
  MAX_SEQ_LENGTH large enough that nothing is cut, after `detect_chat_format`;
- TRL: `SFTTrainer._prepare_dataset` with `SFTConfig(assistant_only_loss=True)` on a `messages` column,
  exactly as SFTTrainer.__init__ calls it, with the training chat template TRL swaps in for Gemma.
  Gemma's template rejects system messages; our script folds a system message into the first user turn,
  so TRL is given the conversations already folded the same way: both see the same text.

Both use the same number of processes (the script's NUM_PROC rule; TRL's dataset_num_proc), and both
timings include building the datasets.Dataset from the Python lists. The trained-token counts are
compared: TRL's Gemma training template trains "<end_of_turn>\\n", the script "<end_of_turn>" only, so
TRL counts one more token per trained reply. The figures go to bench/results/prepare-<cpu>-<date>.json.
"""

import argparse
import datetime
import json
import os
import random
import socket
import tempfile
import time
from pathlib import Path

from common import RESULTS, ROOT, SCRIPT, cpu_name, load_script, slug, versions

IGNORE = -100
PACKAGES = ("datasets", "transformers", "trl", "tokenizers", "pyarrow", "torch")  # versions recorded with the figures

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# ----------------------------------------------------------------------------------------------------
# synthetic conversations

NOUNS = """account answer apple battery bicycle book bridge budget cable camera candle card castle chair
chapter city cloud coffee computer country course data desk device dinner document door engine error
example file forest friend garden glass guitar habit history holiday hotel house idea island kitchen
ladder language lesson letter library machine map market meeting message method minute morning
mountain movie museum network number ocean office paper partner pattern pencil picture plan planet
plant pocket problem program project question recipe report river road room rule schedule school
screen season server signal song source station story street student summer system table teacher
team test ticket tool town train tree value village water weather window winter word world""".split()
VERBS = """add bake build buy carry change check choose clean close collect compare connect cook count
create cut decide describe design draw drive explain fill find finish fix follow grow help improve
install join keep learn leave measure move open order paint plan plant prepare print read record
remove repair replace return run save send share sort start stop store study test travel try update
use visit wait wash watch write""".split()
ADJECTIVES = """bright careful cheap clean clear cold common correct dark deep early easy empty fast
fresh full gentle good great green heavy high honest large late light local long loud low modern
narrow new old open plain quick quiet rare ready real safe short simple slow small smooth soft strong
sweet tall thick thin warm weak wide young""".split()
ADVERBS = "always carefully often quickly rarely slowly usually first then later again together".split()
NAMES = "Ana Bilal Chen Dara Elif Farid Greta Hana Ivan Jun Kofi Lena Mateo Nia Omar Priya".split()
QUESTION_OPENERS = ["How do I", "Can you explain how to", "What is the best way to", "Why should I",
                    "When is it wise to", "Could you show me how to", "Is it hard to"]
REPLY_OPENERS = ["Sure.", "Good question.", "Here is a short answer.", "In short:", "Yes, mostly.",
                 "It depends on the details.", "Let me walk through it."]
SYSTEMS = ["You are a patient tutor who explains things step by step.",
           "You are a concise assistant. Answer in plain language.",
           "You help people plan their projects. Be practical and specific.",
           "You are a friendly guide for travellers. Mention costs when you can."]


def sentence(rng: random.Random) -> str:
    """One sentence of 6-18 words, with an occasional number, name or inline code."""
    words = []
    for _ in range(rng.randint(3, 8)):
        kind = rng.random()
        if kind < 0.35:
            words += ["the", rng.choice(ADJECTIVES), rng.choice(NOUNS)]
        elif kind < 0.6:
            words += [rng.choice(VERBS), "the", rng.choice(NOUNS)]
        elif kind < 0.72:
            words += [rng.choice(ADVERBS)]
        elif kind < 0.8:
            words += [str(rng.randint(2, 2000)), rng.choice(NOUNS) + "s"]
        elif kind < 0.86:
            words += [rng.choice(NAMES)]
        elif kind < 0.9:
            words += [f"`{rng.choice(NOUNS)}_{rng.choice(NOUNS)}()`"]
        else:
            words += [rng.choice(["and", "but", "so", "because", "while", "with", "for", "in", "on"])]
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "!", "?"] if rng.random() < 0.2 else ["."])


def paragraph(rng: random.Random, n_words: int) -> str:
    """Sentences up to about n_words words; sometimes split into paragraphs or a bullet list."""
    parts, count = [], 0
    while count < n_words:
        s = sentence(rng)
        parts.append(s)
        count += len(s.split())
    if len(parts) > 3 and rng.random() < 0.3:
        k = rng.randint(2, len(parts) - 1)
        return " ".join(parts[:k - 1]) + "\n\n" + "\n".join("- " + p for p in parts[k - 1:])
    if len(parts) > 2 and rng.random() < 0.4:
        k = len(parts) // 2
        return " ".join(parts[:k]) + "\n\n" + " ".join(parts[k:])
    return " ".join(parts)


def synthesise(n: int, seed: int) -> list[list[dict]]:
    """n conversations of about 500 tokens: 1-4 exchanges (2-8 messages), a quarter with a system message."""
    rng = random.Random(seed)
    conversations = []
    for _ in range(n):
        exchanges = rng.randint(1, 4)
        budget = rng.randint(270, 410)  # words; about 500 tokens with the template's own tokens
        messages = []
        if rng.random() < 0.25:
            messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
            budget -= len(messages[0]["content"].split())
        shares = [rng.uniform(0.5, 1.5) for _ in range(exchanges)]
        for share in shares:
            words = budget * share / sum(shares)
            user_words = max(4, int(words * rng.uniform(0.15, 0.35)))
            question = f"{rng.choice(QUESTION_OPENERS)} {rng.choice(VERBS)} the {rng.choice(NOUNS)}?"
            messages.append({"role": "user", "content": question + " " + paragraph(rng, user_words - 8)})
            messages.append({"role": "assistant",
                             "content": rng.choice(REPLY_OPENERS) + " " + paragraph(rng, int(words) - user_words)})
        conversations.append(messages)
    return conversations


def fold_system(messages: list[dict]) -> list[dict]:
    """What the script does for a template without a system role (Gemma's): system text atop the first user turn."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if messages[0]["role"] != "system":
        return messages
    return [dict(messages[1], content=messages[0]["content"] + "\n\n" + messages[1]["content"])] + messages[2:]


# ----------------------------------------------------------------------------------------------------
# the two preparations


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the map workers): steady when other work
    shares the machine, unlike the wall clock."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def prepare_ours(ft, conversations, tokenizer, max_len: int):
    """The script's own path: validate, detect the markers, tokenize and mask. Returns (dataset, timings)."""
    from multiturn import examples, template_probes, validation  # the package beside the script load_script read

    t0 = time.perf_counter()
    cleaned, problems = validation.clean_conversations(conversations, "bench", strict=False)
    t1 = time.perf_counter()
    fmt = template_probes.detect_chat_format(tokenizer)
    cfg = dict(ft.CONFIG, MAX_SEQ_LENGTH=max_len)
    t2, c2 = time.perf_counter(), cpu_seconds()
    dataset, stats = examples.prepare_dataset(cleaned, tokenizer, fmt, cfg, "bench")
    t3, c3 = time.perf_counter(), cpu_seconds()
    assert not problems and not stats, (problems, stats)  # the data is clean and nothing is cut
    return dataset, {"validate_s": t1 - t0, "detect_format_s": t2 - t1, "prepare_dataset_s": t3 - t2,
                     "cpu_s": c3 - c2}


def prepare_trl(conversations, tokenizer, max_len: int, num_proc, work_dir: str):
    """TRL's own path: SFTTrainer._prepare_dataset with assistant_only_loss=True, as SFTTrainer.__init__ runs it.

    The trainer itself is not built (it needs a model); _prepare_dataset reads only the attributes set
    here, which __init__ sets the same way for a conversational dataset.
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    args = SFTConfig(output_dir=work_dir, assistant_only_loss=True, dataset_num_proc=num_proc, max_length=max_len,
                     use_cpu=True, bf16=False, report_to="none")
    trainer = SFTTrainer.__new__(SFTTrainer)
    trainer._tokenizer = tokenizer
    trainer.completion_only_loss = False  # SFTConfig default (None) resolves to False for a "messages" dataset
    trainer.chat_template = None if has_generation_markers(tokenizer.chat_template) else get_training_chat_template(
        tokenizer)
    if trainer.chat_template is None:
        raise SystemExit("TRL has no training chat template for this tokenizer; the comparison needs one")
    folded = [fold_system(c) for c in conversations]
    t0, c0 = time.perf_counter(), cpu_seconds()
    dataset = Dataset.from_dict({"messages": folded})
    dataset = SFTTrainer._prepare_dataset(trainer, dataset, tokenizer, args, packing=False, formatting_func=None,
                                          dataset_name="train")
    t1, c1 = time.perf_counter(), cpu_seconds()
    return dataset, {"prepare_s": t1 - t0, "cpu_s": c1 - c0}


def token_totals(dataset) -> dict:
    """Examples, tokens and trained tokens of a prepared dataset (counted with Arrow, outside the timings)."""
    import pyarrow.compute as pc

    table = dataset.with_format("arrow")[:]
    ids = pc.list_flatten(table["input_ids"])
    labels = pc.list_flatten(table["labels"])
    return {"examples": len(dataset), "tokens": len(ids),
            "trained_tokens": int(pc.sum(pc.cast(pc.not_equal(labels, IGNORE), "int64")).as_py() or 0)}


def tokenizer_hash_seconds(tokenizer) -> float:
    """What datasets spends hashing the tokenizer for a map() fingerprint: paid once by each side."""
    from datasets.fingerprint import Hasher

    t0 = time.perf_counter()
    Hasher.hash(tokenizer)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="conversations (default 100000)")
    parser.add_argument("--model", default=str(ROOT / "models" / "gemma-3-270m"), help="tokenizer folder or hub id")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--num_proc", type=int, default=0, help="processes for both; 0 = the script's NUM_PROC rule")
    parser.add_argument("--max_seq_length", type=int, default=4096, help="large enough that nothing is cut")
    parser.add_argument("--script", default=str(SCRIPT), help="the fine-tuning script whose preparation is timed")
    parser.add_argument("--skip_trl", action="store_true", help="time only the script's preparation")
    parser.add_argument("--out", default="", help="results file; default bench/results/prepare-<cpu>-<date>.json")
    args = parser.parse_args()

    from datasets import disable_progress_bars
    from transformers import AutoTokenizer

    disable_progress_bars()
    ft = load_script(Path(args.script))
    if args.num_proc:
        ft.CONFIG["NUM_PROC"] = args.num_proc
    # the number of processes the script's prepare_dataset uses for this many conversations; TRL gets the same
    num_proc = ft.CONFIG["NUM_PROC"] or min(8, os.cpu_count() or 1)
    num_proc = num_proc if args.n >= 2000 and num_proc > 1 else None

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    print(f"synthesising {args.n:,} conversations (seed {args.seed}) ...", flush=True)
    conversations = synthesise(args.n, args.seed)
    n_messages = sum(len(c) for c in conversations)
    n_replies = sum(1 for c in conversations for m in c if m["role"] == "assistant")
    n_system = sum(1 for c in conversations if c[0]["role"] == "system")
    print(f"  {n_messages:,} messages, {n_replies:,} assistant replies, {n_system:,} with a system message; "
          f"processes: {num_proc or 1} for both ({os.cpu_count()} CPUs)", flush=True)

    print("preparing with the script (prepare_dataset) ...", flush=True)
    ours_set, ours_times = prepare_ours(ft, conversations, tokenizer, args.max_seq_length)
    ours = {**token_totals(ours_set), **ours_times}
    ours["seconds"] = ours_times["prepare_dataset_s"]
    print(f"  {ours['seconds']:.1f} s", flush=True)

    trl = None
    if not args.skip_trl:
        print("preparing with TRL (SFTTrainer._prepare_dataset, assistant_only_loss=True) ...", flush=True)
        with tempfile.TemporaryDirectory() as work_dir:
            trl_set, trl_times = prepare_trl(conversations, tokenizer, args.max_seq_length, num_proc, work_dir)
            trl = {**token_totals(trl_set), **trl_times, "seconds": trl_times["prepare_s"]}
            # same text on both sides: compare the input ids of a sample of conversations
            sample = range(0, len(conversations), max(1, len(conversations) // 500))
            ours_ids, trl_ids = ours_set.select(sample)["input_ids"], trl_set.select(sample)["input_ids"]
            trl["sample_same_input_ids"] = sum(a == b for a, b in zip(ours_ids, trl_ids))
            trl["sample_size"] = len(sample)
            del trl_set
        print(f"  {trl['seconds']:.1f} s", flush=True)
    hash_s = tokenizer_hash_seconds(tokenizer)

    rows = [("ours: prepare_dataset", ours)] + ([("TRL: _prepare_dataset", trl)] if trl else [])
    print()
    header = f"{'preparation':<24} {'conversations':>13} {'tokens':>12} {'trained':>12} {'seconds':>9} " \
             f"{'conv/s':>9} {'speed-up':>9} {'CPU s':>9} {'CPU speed-up':>12}"
    print(header)
    print("-" * len(header))
    for name, r in rows:
        speed = f"{trl['seconds'] / r['seconds']:.2f}x" if trl else "-"
        cpu_speed = f"{trl['cpu_s'] / r['cpu_s']:.2f}x" if trl else "-"
        print(f"{name:<24} {args.n:>13,} {r['tokens']:>12,} {r['trained_tokens']:>12,} {r['seconds']:>9.1f} "
              f"{args.n / r['seconds']:>9,.0f} {speed:>9} {r['cpu_s']:>9.1f} {cpu_speed:>12}")
    print()
    print("seconds: wall clock; CPU s: CPU time of the process and its map workers together (less sensitive to "
          "other work on the machine)")
    print(f"tokens per conversation: {ours['tokens'] / args.n:.0f} on average; examples: {ours['examples']:,}")
    print(f"ours also validated the data in {ours['validate_s']:.1f} s (clean_conversations, not in the figure above)")
    print(f"hashing the tokenizer for a datasets fingerprint: {hash_s:.1f} s (once per map() call given the tokenizer)")
    check = {}
    if trl:
        difference = trl["trained_tokens"] - ours["trained_tokens"]
        check = {"trained_token_difference": difference, "assistant_replies": n_replies,
                 "difference_is_one_newline_per_reply": difference == n_replies,
                 "same_tokens": trl["tokens"] == ours["tokens"]}
        print(f"trained tokens: ours {ours['trained_tokens']:,}, TRL {trl['trained_tokens']:,}, difference "
              f"{difference:,} ({'exactly' if difference == n_replies else 'NOT'} one '\\n' after each of the "
              f"{n_replies:,} replies)")
        same = "same" if check["same_tokens"] else "differ"
        print(f"tokens: ours {ours['tokens']:,}, TRL {trl['tokens']:,} ({same}); identical input_ids in "
              f"{trl['sample_same_input_ids']} of {trl['sample_size']} sampled conversations")
        print(f"speed-up: {trl['seconds'] / ours['seconds']:.2f}x wall clock, {trl['cpu_s'] / ours['cpu_s']:.2f}x CPU "
              f"time (ours is {'faster' if ours['seconds'] < trl['seconds'] else 'SLOWER'})")

    today = datetime.date.today().isoformat()
    suffix = "" if args.n == 100_000 else f"-n{args.n}"
    out = Path(args.out) if args.out else RESULTS / f"prepare-{slug(cpu_name())}-{today}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "date": today, "n_conversations": args.n, "seed": args.seed, "num_proc": num_proc or 1,
        "cpu_count": os.cpu_count(), "cpu": cpu_name(), "hostname": socket.gethostname(),
        "model": str(args.model), "script": str(args.script), "max_seq_length": args.max_seq_length,
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
        "messages": n_messages, "assistant_replies": n_replies, "with_system": n_system,
        "ours": ours, "trl": trl, "speed_up": (trl["seconds"] / ours["seconds"]) if trl else None,
        "cpu_speed_up": (trl["cpu_s"] / ours["cpu_s"]) if trl else None,
        "load_average_after": list(os.getloadavg()),
        "tokenizer_hash_s": hash_s, "check": check, "versions": versions(PACKAGES),
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
