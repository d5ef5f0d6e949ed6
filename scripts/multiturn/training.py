"""The trainer: TRL's SFTTrainer with the run's arguments, stopped at the first non-finite loss, and the errors a
user can act on (out of memory, NaN, Ctrl-C) turned into one line each."""

import contextlib
from pathlib import Path

from .errors import UserError
from .library_patches import head_with_trained_rows, row_gradients_only
from .run_folder import ProgressPrinter, last_checkpoint


class NonFiniteLoss(Exception):
    pass


def make_trainer_class():
    """SFTTrainer that stops at the first non-finite loss, before the optimizer applies it."""
    import torch
    from trl import SFTTrainer

    class Trainer(SFTTrainer):
        def training_step(self, *args, **kwargs):
            loss = super().training_step(*args, **kwargs)
            if not torch.isfinite(loss).all():  # one host sync per micro-batch: negligible beside the step
                raise NonFiniteLoss(self.state.global_step + 1)
            return loss

    return Trainer


def training_arguments(cfg: dict, run_dir: Path, bf16: bool, padding_free: bool, evaluates: bool, cuda: bool):
    """TRL's SFTConfig from the settings. Made before the model: under DeepSpeed ZeRO-3 it switches on sharded
    loading."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(run_dir), run_name=run_dir.name, seed=cfg["SEED"], data_seed=cfg["SEED"],
        num_train_epochs=cfg["NUM_TRAIN_EPOCHS"], max_steps=cfg["MAX_STEPS"],
        per_device_train_batch_size=cfg["BATCH_SIZE"], per_device_eval_batch_size=cfg["BATCH_SIZE"],
        gradient_accumulation_steps=cfg["GRADIENT_ACCUMULATION_STEPS"], learning_rate=cfg["LEARNING_RATE"],
        lr_scheduler_type=cfg["LR_SCHEDULER"], warmup_steps=cfg["WARMUP_RATIO"], weight_decay=cfg["WEIGHT_DECAY"],
        max_grad_norm=cfg["MAX_GRAD_NORM"], bf16=bf16,
        logging_steps=1,  # every step's loss in metrics.jsonl (the report page); the terminal every LOGGING_STEPS
        eval_strategy="steps" if evaluates and cfg["EVAL_STEPS"] > 0 else "no",
        eval_steps=cfg["EVAL_STEPS"] or None,
        save_strategy="steps" if cfg["SAVE_STEPS"] > 0 else "no", save_steps=cfg["SAVE_STEPS"] or 500,
        save_total_limit=cfg["SAVE_TOTAL_LIMIT"], report_to=cfg["REPORT_TO"], disable_tqdm=True,
        activation_checkpointing=cfg["GRADIENT_CHECKPOINTING"],
        activation_checkpointing_kwargs={"use_reentrant": False},  # the reentrant variant breaks with frozen bases
        max_length=cfg["MAX_SEQ_LENGTH"] if not padding_free else None, padding_free=padding_free,
        dataset_kwargs={"skip_prepare_dataset": True},  # tokenized and masked by examples.py
        train_sampling_strategy="random" if padding_free else "group_by_length",
        remove_unused_columns=True, use_cpu=not cuda,
    )


def make_trainer(model, args, train_set, eval_set, tokenizer, peft_config, run_dir: Path, cfg: dict, processes: int,
                 log):
    """The trainer, with our progress line in place of its raw dicts; says the effective batch."""
    from transformers import PrinterCallback

    progress = ProgressPrinter(log, run_dir, cfg["LOGGING_STEPS"])
    trainer = make_trainer_class()(
        model=model, args=args, train_dataset=train_set.remove_columns(["conversation_index"]),
        eval_dataset=eval_set.remove_columns(["conversation_index"]) if eval_set is not None else None,
        processing_class=tokenizer, peft_config=peft_config, callbacks=[progress.callback],
    )
    trainer.remove_callback(PrinterCallback)
    log(f"effective batch: {cfg['BATCH_SIZE']} per device x {cfg['GRADIENT_ACCUMULATION_STEPS']} accumulation "
        f"x {processes} process{'es' if processes > 1 else ''} = "
        f"{cfg['BATCH_SIZE'] * cfg['GRADIENT_ACCUMULATION_STEPS'] * processes} examples per optimizer step")
    return trainer


def train(trainer, cfg: dict, run_dir: Path, rows_trained: bool, is_main: bool, log) -> None:
    """Evaluate, train (or resume), evaluate again. NaN, out of memory and Ctrl-C end as one line saying what to do;
    Ctrl-C saves a checkpoint first."""
    import torch

    head = head_with_trained_rows(trainer.model) if rows_trained else None
    evaluates = trainer.eval_dataset is not None
    if evaluates and not cfg["RESUME"]:
        trainer.evaluate()
    resume_from = None
    if cfg["RESUME"]:
        resume_from = last_checkpoint(run_dir)
        if resume_from is None:
            raise UserError(f"{run_dir} has no complete checkpoint to resume from; start a new run")
        log(f"resuming from {resume_from}")
    try:
        with row_gradients_only(head, log) if rows_trained else contextlib.nullcontext():
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except NonFiniteLoss as error:
        good = last_checkpoint(run_dir)
        raise UserError(
            f"the loss became NaN or infinite at step {error.args[0]}; training stopped before that update. "
            + (f"The last good checkpoint is {good}. " if good else "No checkpoint was written yet. ")
            + "Lower --learning_rate, check the data for broken examples, or keep float32/bfloat16 (not float16)."
        ) from None
    except torch.OutOfMemoryError:
        raise UserError(
            "out of GPU memory. Try, in this order: --batch_size=1 with a larger --gradient_accumulation_steps "
            "(same effective batch); a smaller --max_seq_length; --gradient_checkpointing=True; "
            "--load_in_4bit=True (QLoRA)."
        ) from None
    except KeyboardInterrupt:
        if is_main:
            print("\ninterrupted: saving a checkpoint ...", flush=True)
        trainer._save_checkpoint(trainer.model, trial=None)
        raise UserError(f"stopped by Ctrl-C at step {trainer.state.global_step}; checkpoint saved in {run_dir}. "
                        f"Resume with: --resume=True --run_name={run_dir.name}") from None
    if evaluates:
        trainer.evaluate()


def save_adapter(trainer, model, run_dir: Path, is_main: bool) -> None:
    """The LoRA adapter, tokenizer with its chat template and the generation config, into the run folder."""
    if trainer.is_fsdp_enabled:  # Trainer.save_model writes nothing for a sharded state dict: gather the adapter
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(run_dir))
    if is_main:
        model.generation_config.save_pretrained(run_dir)
