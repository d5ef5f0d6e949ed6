"""The run's data from one or several sources: DATA_PATH and EVAL_DATA_PATH each a source or a list of them, each
validated on its own, held out for evaluation per source (EVAL_FRACTION), then weighted and mixed."""

import math
import random
from collections import Counter
from pathlib import Path

from .errors import UserError
from .validation import Data, validate_data


def parse_sources(value, setting: str) -> list[tuple[str, float]]:
    """A data setting as (path, weight) pairs: a source ("chat.jsonl", a .parquet file, a dataset folder or id) or
    a list of sources, each a path or {"path": ..., "weight": W}."""
    example = f"--{setting.lower()}=\"['chat.jsonl', {{'path': 'tools.parquet', 'weight': 0.5}}]\""
    items = value if isinstance(value, list) else [value]
    out = []
    for k, item in enumerate(items):
        if isinstance(item, dict) and set(item) <= {"path", "weight"} and isinstance(item.get("path"), str):
            path, weight = item["path"], item.get("weight", 1)
        else:
            path, weight = item, 1
        if not isinstance(path, str) or not path.strip():
            raise UserError(f"{setting.lower()}: source {k} is {item!r}; each source is a path or "
                            f"{{'path': ..., 'weight': W}}, e.g. {example}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
            raise UserError(f"{setting.lower()}: the weight of {path} must be a number >= 0 (0.5 takes half its "
                            f"conversations, 2 takes each twice), found {weight!r}")
        out.append((path, float(weight)))
    if len({path for path, _ in out}) < len(out):
        raise UserError(f"{setting.lower()}: a source is listed twice; give it once with a weight instead")
    return out


def weighted(n: int, weight: float, seed) -> list[int]:
    """The indices a source of n conversations contributes with this weight: below 1, a seeded round(weight x n)
    of them; from 1, each floor(weight) times and a seeded round(fraction x n) of them once more. In order."""
    whole, fraction = divmod(weight, 1.0)
    share = sorted(random.Random(seed).sample(range(n), round(fraction * n)))
    return [i for _ in range(int(whole)) for i in range(n)] + share


def held_out(n: int, fraction: float, seed: int) -> set:
    """The conversations of a source of n held out for evaluation: a seeded round(fraction x n), at least one."""
    if fraction <= 0 or n == 0:
        return set()
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return set(order[:max(1, round(fraction * n))])


def read_sources(setting: str, cfg: dict, folder: Path | None, name: str, log) -> list[tuple[Data, float]]:
    """Validate every source of a setting; the problems of all of them are reported together."""
    sources = parse_sources(cfg[setting], setting)
    out, reports = [], []
    for k, (path, weight) in enumerate(sources):
        try:
            data = validate_data(path, cfg["STRICT"], folder, name if len(sources) == 1 else f"{name}-{k}", log,
                                 cfg["ROLE_MAP"], cfg["NON_TEXT_CONVERSATIONS"])
        except UserError as error:  # the other sources are still read: every problem is named in one run
            reports.append(str(error))
            continue
        out.append((data, weight))
    if reports:
        raise UserError("\n".join(reports))
    return out


def mixed(parts: list[tuple[Data, float, list]], seed: int, held: int = 0) -> Data:
    """One Data of several validated sources: each source's conversations at `indices` (None: all of them, in
    order), weighted and concatenated. The counts are summed, and kept per source for the summary."""
    from datasets import concatenate_datasets

    datasets, rows = [], []
    for k, (data, weight, indices) in enumerate(parts):
        n = data.kept if indices is None else len(indices)
        picks = weighted(n, weight, f"{seed}-{k}")
        if data.conversations is not None and n:
            whole = indices is None and weight == 1  # the source as it is: no index mapping
            chosen = picks if indices is None else [indices[i] for i in picks]
            datasets.append(data.conversations if whole else data.conversations.select(chosen))
        rows.append({"path": data.path, "weight": weight, "read": data.read, "kept": data.kept,
                     "held": data.kept - n, "taken": len(picks)})
    first = parts[0][0]
    conversations = None if not datasets else datasets[0] if len(datasets) == 1 else concatenate_datasets(datasets)
    found = first.found if len(parts) == 1 else "; ".join(f"{d.path}: {d.found}" for d, _, _ in parts)
    return Data(conversations, found, sum(d.read for d, _, _ in parts), sum(r["taken"] for r in rows),
                sum((d.problems for d, _, _ in parts), Counter()), sum((d.features for d, _, _ in parts), Counter()),
                sum((d.read_as for d, _, _ in parts), Counter()), rows, first.path if len(parts) == 1 else "")


def read_train_and_eval(cfg: dict, run_dir: Path, folder: Path | None, log) -> tuple[Data, Data | None]:
    """The training data and the evaluation data (EVAL_DATA_PATH, or EVAL_FRACTION of whole conversations held
    out of each source before weighting, so that no conversation is in both), validated, weighted and mixed. The
    main process keeps what it validated in Arrow files in `folder` (memory-mapped: memory does not grow with the
    data); the others validate alike, for the same errors, and keep nothing."""
    from .run_folder import removed_on_error

    with removed_on_error(run_dir, folder):
        sources = read_sources("DATA_PATH", cfg, folder, "train", log)
        evaluation = None
        if cfg["EVAL_DATA_PATH"] not in ("", []):
            evaluation = mixed([(d, w, None) for d, w in read_sources("EVAL_DATA_PATH", cfg, folder, "eval", log)],
                               cfg["SEED"])
    fraction = cfg["EVAL_FRACTION"] if evaluation is None else 0.0
    splits = [held_out(data.kept, fraction, cfg["SEED"] + k) for k, (data, _) in enumerate(sources)]
    train = mixed([(d, w, [i for i in range(d.kept) if i not in h] if h else None)
                   for (d, w), h in zip(sources, splits)], cfg["SEED"])
    if any(splits):
        evaluation = mixed([(d, 1.0, sorted(h)) for (d, _), h in zip(sources, splits)], cfg["SEED"])
        evaluation.problems = evaluation.features = evaluation.read_as = Counter()  # counted with the training data
        evaluation.read = evaluation.kept
        for row in evaluation.sources:  # the part of each source held out
            row.update(read=row["taken"], kept=row["taken"], held=0)
    if not train.kept:
        raise UserError(f"{cfg['DATA_PATH']}: no conversation is left to train on after validation")
    return train, evaluation
