"""The run's report page, report.html in the run folder: one self-contained file (no network; it opens from disk
in any browser) with the data summary, examples shown token by token with what is trained, and, once training
has run, the loss curves and the replies before and after. Written when the data is prepared, completed after
training; a resumed run writes the same page again, with every step of its metrics.jsonl."""

import html
import json
import time
from pathlib import Path

SHOWN_EXAMPLES = 300  # the first examples, and every example with a warning from preparation (up to as many more)
SHOWN_TOKENS = 300_000  # tokens of all shown examples together, at most: the page stays a few MB for any data
KIND_CODES = {"reply": "r", "reasoning": "z", "call": "c", "result": "t", "user": "u", "system": "s", "": "."}


def example_rows(train, train_set, tokenizer, fmt, cfg: dict, warned: dict) -> tuple[list[dict], str]:
    """The examples the page shows: ids, trained flags and each token's kind (the message it belongs to), its
    source and any warning; and a line saying what was left out."""
    from .preview import many_token_kinds
    from .token_ids import IGNORE_INDEX

    chosen = list(range(min(SHOWN_EXAMPLES, len(train_set))))
    chosen += sorted(k for k in warned if k >= SHOWN_EXAMPLES)[:SHOWN_EXAMPLES]
    rows, tokens, conversations = [], 0, []
    for k in chosen:
        row = train_set[k]
        if tokens + len(row["input_ids"]) > SHOWN_TOKENS:
            break
        tokens += len(row["input_ids"])
        conversation = train.conversations[row["conversation_index"]]
        conversations.append((json.loads(conversation["conversation"]), row["input_ids"]))
        rows.append({"k": k, "source": conversation["source"], "ids": row["input_ids"],
                     "trained": "".join("0" if x == IGNORE_INDEX else "1" for x in row["labels"]),
                     "warning": warned.get(k, "")})
    for row, kinds in zip(rows, many_token_kinds(tokenizer, fmt, conversations, cfg)):
        row["kinds"] = "".join(KIND_CODES.get(x, ".") for x in kinds) if kinds else None
    note = f"{len(rows)} of {len(train_set)} examples shown"
    if len(rows) < len(chosen):
        note += f" (the page shows at most {SHOWN_TOKENS:,} tokens)"
    return rows, note


def vocabulary(tokenizer, rows: list[dict]) -> dict:
    """Each token id the shown examples use: its text as decoded alone, its token string, whether it is special."""
    from .sentinels import control_token_ids

    ids = sorted({i for row in rows for i in row["ids"]})
    special = control_token_ids(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    return {i: [tokenizer.decode([i]), piece, int(i in special)] for i, piece in zip(ids, pieces)}


def length_histogram(train_set, max_seq_length: int, bins: int = 40) -> dict:
    """Example lengths in equal bins from 0 to the larger of MAX_SEQ_LENGTH and the longest example."""
    import numpy as np
    import pyarrow.compute as pc

    lengths = pc.list_value_length(train_set.data.column("input_ids")).to_numpy()
    top = max(max_seq_length, int(lengths.max()) if len(lengths) else 1)
    counts, edges = np.histogram(lengths, bins=bins, range=(0, top))
    return {"counts": counts.tolist(), "edges": [round(float(e), 1) for e in edges], "limit": max_seq_length}


def prepared(run_dir: Path, cfg: dict, train, train_set, cut_stats, tokenizer, fmt, summary: dict,
             features: list) -> dict:
    """What the page shows once the data is prepared (write() writes it): the summary of each part as the
    terminal shows it, what the template does, the length histogram, and the examples."""
    from .template_probes import describe

    rows, note = example_rows(train, train_set, tokenizer, fmt, cfg, getattr(cut_stats, "warned", {}))
    return {"run": run_dir.name, "written": time.strftime("%Y-%m-%d %H:%M:%S"), "model": cfg["MODEL_NAME"],
            "data": cfg["DATA_PATH"], "summary": summary, "template": describe(fmt), "features": features,
            "histogram": length_histogram(train_set, cfg["MAX_SEQ_LENGTH"]), "examples": rows, "note": note,
            "vocab": vocabulary(tokenizer, rows), "training": None}


def training_payload(run_dir: Path) -> dict:
    """What the page shows after training: every logged step's loss and eval loss (metrics.jsonl), the replies
    before and after (replies.json), and the adapter's files."""
    steps, evals = {}, {}
    metrics = run_dir / "metrics.jsonl"
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        record = json.loads(line)
        if "loss" in record:
            steps[record["step"]] = record["loss"]  # a resumed run logs its steps again: the last one counts
        if "eval_loss" in record:
            evals[record["step"]] = record["eval_loss"]
    replies = run_dir / "replies.json"
    files = sorted(p.name for p in run_dir.glob("adapter_*")) + [p for p in ("training_config.json", "loss.png")
                                                                  if (run_dir / p).exists()]
    return {"loss": sorted(steps.items()), "eval_loss": sorted(evals.items()),
            "replies": json.loads(replies.read_text()) if replies.exists() else None, "files": files}


def write(run_dir: Path, payload: dict) -> Path:
    """report.html: the page's script and style with the payload as JSON inside it."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    page = _PAGE.replace("{{TITLE}}", html.escape(f"report: {payload['run']}")).replace("{{DATA}}", data)
    path = run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


_PAGE = (Path(__file__).parent / "report_page.html").read_text(encoding="utf-8")
