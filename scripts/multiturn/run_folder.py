"""A run's folder: created once and never overwritten, checkpoints, the progress line and metrics.jsonl, the loss
plot."""

import contextlib
import json
import math
import shutil
import time
from pathlib import Path

from .errors import UserError


class ProgressPrinter:
    """Every optimizer step's loss to metrics.jsonl in the run folder; one fixed-format line every `every` steps
    (and at the last), with the mean loss of the steps since the line before."""

    def __init__(self, log, run_dir: Path, every: int = 1):
        from transformers import TrainerCallback

        printer = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                printer.last_time = time.time()  # the rate excludes model loading and the first evaluation

            def on_log(self, args, state, control, logs=None, **kw):
                if state.is_world_process_zero:  # every process gets the same logs; one writes them
                    printer.on_log(state, logs or {})

        self.callback = _Callback()
        self.log, self.path, self.every = log, run_dir / "metrics.jsonl", every
        self.last_time, self.last_tokens, self.losses = time.time(), 0, []

    def on_log(self, state, logs: dict):
        record = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if "loss" in logs:
            self.losses.append(logs["loss"])
            if state.global_step % self.every and state.global_step != state.max_steps:
                return
            now, tokens = time.time(), logs.get("num_tokens", 0)
            rate = (tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
            self.last_time, self.last_tokens = now, tokens
            mem = f" | mem {peak_memory_gib():.1f} GiB"
            loss, self.losses = sum(self.losses) / len(self.losses), []
            self.log(f"step {state.global_step:>5}/{state.max_steps} | loss {loss:.4f} | "
                     f"lr {logs.get('learning_rate', 0):.2e} | {rate:,.0f} tok/s{mem}")
        elif "eval_loss" in logs:
            self.log(f"eval  step {state.global_step:>5} | eval loss {logs['eval_loss']:.4f} | "
                     f"perplexity {math.exp(min(logs['eval_loss'], 50)):.2f}")


def peak_memory_gib() -> float:
    """Peak memory so far: the GPU's allocated memory, or on the CPU the process's peak resident set."""
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def new_run_dir(output_dir: str, run_name: str, resume: bool) -> Path:
    """Each run gets its own folder; a finished run is never overwritten.

    run_name "" means the start time; under several processes the caller passes the main process's
    choice to all, so that they agree on one folder.
    """
    root = Path(output_dir)
    if resume:
        candidates = [root / run_name] if run_name else sorted(
            (p for p in root.glob("*") if p.is_dir() and not (p / "DONE").exists()), key=lambda p: p.stat().st_mtime)
        if not candidates or not candidates[-1].exists():
            raise UserError(f"nothing to resume in {root}" + (f" named {run_name!r}" if run_name else ""))
        run_dir = candidates[-1]
        if (run_dir / "DONE").exists():
            raise UserError(f"{run_dir} finished already; start a new run instead of resuming")
        return run_dir
    run_dir = root / (run_name or time.strftime("%Y%m%d-%H%M%S"))
    if (run_dir / "DONE").exists():
        raise UserError(f"{run_dir} holds a finished run; choose another --run_name (it is never overwritten)")
    if run_dir.exists() and any(run_dir.glob("checkpoint-*")):
        raise UserError(f"{run_dir} holds an unfinished run; add --resume=True to continue it, or pick another name")
    return run_dir


def last_checkpoint(run_dir: Path):
    """The newest complete checkpoint of a run (one with its trainer state written), or None."""
    done = [p for p in run_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


@contextlib.contextmanager
def removed_on_error(run_dir: Path, folder: Path | None):
    """On an error, remove the prepared data, and the run folder if nothing else is in it: a failed start leaves
    nothing behind."""
    try:
        yield
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if empty
        raise


def plot_losses(metrics_path: Path, out_path: Path):
    """Train and eval loss against the optimizer step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for points, label, style in ((train, "train", "-"), (evals, "eval", "o-")):
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss on trained (assistant) tokens")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def run_dir_for(state, cfg: dict) -> Path:
    """The run's folder (RUN_NAME, or the start time), the same in every process."""
    run_name = cfg["RUN_NAME"] or (time.strftime("%Y%m%d-%H%M%S") if not cfg["RESUME"] else "")
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        run_name = broadcast_object_list([run_name])[0]
    return new_run_dir(cfg["OUTPUT_DIR"], run_name, cfg["RESUME"])


def write_config(run_dir: Path, cfg: dict, defaults: dict, is_main: bool, log) -> None:
    """training_config.json: every setting of the run (--config=it repeats the run); the log names the changed ones."""
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "training_config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    log("config: " + ", ".join(f"{k.lower()}={v!r}" for k, v in cfg.items() if v != defaults[k]) or "defaults")
    log(f"run folder: {run_dir}")


def write_prepared(run_dir: Path, train_set, conversations, log) -> None:
    """PREPARE_ONLY's result: prepared.jsonl, one training example per line: its input_ids and labels, and the
    conversation it comes from ("source": the data source and the conversation's index there)."""
    sources = conversations.select_columns(["source"]).select(train_set["conversation_index"])  # read in batches
    with (run_dir / "prepared.jsonl").open("w") as f:
        for rows, named in zip(train_set.iter(batch_size=1000), sources.iter(batch_size=1000)):
            for ids, labels, source in zip(rows["input_ids"], rows["labels"], named["source"]):
                f.write(json.dumps({"input_ids": ids, "labels": labels, "source": source}) + "\n")
    log(f"wrote {run_dir / 'prepared.jsonl'} ({len(train_set)} examples); stopping before the model loads")
    shutil.rmtree(run_dir / ".prepared", ignore_errors=True)


def finish(run_dir: Path, log) -> None:
    """The loss plot, the prepared data removed (only needed while processes start), and DONE: a finished run is
    never overwritten or resumed."""
    plot = plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png")
    shutil.rmtree(run_dir / ".prepared", ignore_errors=True)
    (run_dir / "DONE").write_text("finished\n")
    if plot:
        log(f"loss plot: {plot}")


def training_config(path: Path) -> dict:
    """The settings a run was trained with (its training_config.json), read from a run folder or from one of its
    checkpoint-N folders; {} where there is none (a merged model folder)."""
    for folder in (path, path.parent):
        config_file = folder / "training_config.json"
        if config_file.exists():
            return json.loads(config_file.read_text())
    return {}


def trained_in_4bit(path: Path) -> bool:
    """True for a QLoRA run (LOAD_IN_4BIT in its training_config.json)."""
    return bool(training_config(path).get("LOAD_IN_4BIT", False))


def template_kwargs(path: Path) -> dict:
    """CHAT_TEMPLATE_KWARGS the run was trained with, so that chat and export render as training did."""
    return training_config(path).get("CHAT_TEMPLATE_KWARGS", {})
