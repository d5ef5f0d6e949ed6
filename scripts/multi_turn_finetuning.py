"""Fine-tune a chat model on multi-turn conversations with LoRA, training on assistant turns only.

    python scripts/multi_turn_finetuning.py                          # the constants below
    python scripts/multi_turn_finetuning.py --prepare_only=True      # show what would be trained, then stop
    python scripts/multi_turn_finetuning.py --model_name=models/gemma-3-270m --max_steps=30
    accelerate launch --config_file configs/accelerate/ddp.yaml scripts/multi_turn_finetuning.py

    python scripts/multi_turn_finetuning.py --help                   # every setting, its default and meaning

Every constant below can be overridden as --name=value (lower-case name, a Python literal; strings
may be written bare) or --config=FILE.json. main() is the whole path, one call per phase: read and
validate the data -> tokenizer and chat template -> tokenize and mask -> show what will be trained ->
model and LoRA -> train -> save. Each phase lives in a module of scripts/multiturn/.
"""

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the package beside this file: scripts/multiturn/
from multiturn import (  # noqa: E402  (light modules: nothing heavy loads before the data is validated)
    control_tokens, errors, examples, library_patches, model_setup, preview, replies, report_page, run_folder, settings,
    sources, training,
)

# ----------------------------------------------------------------------------------------------------
# data
DATA_PATH = "data/conversations.json"  # JSON/JSONL/Parquet/dataset (OpenAI, HF messages, ShareGPT...), or a list of
#             sources, each a path or {"path": ..., "weight": W}: W < 1 takes that share, W >= 1 repeats (seeded)
EVAL_DATA_PATH = ""  # same forms; "" = none (see EVAL_FRACTION)
EVAL_FRACTION = 0.0  # share of whole conversations held out of each source for evaluation when EVAL_DATA_PATH is ""
STRICT = False  # True: soft data problems (merged turns, dropped turns, skipped conversations) are errors
ROLE_MAP = {}  # the data's own role names: {"bing": "assistant", "chatgpt": "assistant", "bard": None}; None leaves
#               out the conversations holding that role (adds to human/gpt/function_call/observation/...)
NON_TEXT_CONVERSATIONS = "error"  # conversations with image, audio or file parts: "error" names them; "leave_out"
UNRENDERABLE_CONVERSATIONS = "error"  # conversations the template cannot render faithfully: "error" or "leave_out"
TRAIN_ON = "all"  # "all": every assistant turn is trained; "last": only the last one of each conversation
TRAIN_REASONING = True  # train the assistant's reasoning (where the template renders it); False: context only
MAX_SEQ_LENGTH = 2048  # tokens per training example; longer conversations are cut at turn boundaries
LONG_CONVERSATIONS = "split"  # "split": several examples, each starting at a user turn; "truncate": keep the head
OVERLONG_EXCHANGE = "truncate"  # one exchange longer than MAX_SEQ_LENGTH: "truncate" its reply, or "drop" it
PREVIEW_EXAMPLES = 1  # examples printed with their trained tokens marked
NUM_PROC = 0  # processes for data preparation; 0 = one per CPU core, at most 8
# model
MODEL_NAME = "google/gemma-2-9b-it"  # hub id or local folder
CHAT_TEMPLATE = ""  # "" = the tokenizer's own; or a .jinja file (a base model without one, or to override it)
CHAT_TEMPLATE_KWARGS = {}  # passed to every rendering, in training and chat, e.g. {"enable_thinking": False}
ATTN_IMPLEMENTATION = "auto"  # "auto": the fastest exact kernel; or "flash_attention_2", "flex_attention", "sdpa", "eager"
PRECISION = "auto"  # "auto": bf16 on a CUDA GPU or a CPU with native bf16 (AVX512-BF16/AMX), else fp32; "bf16"/"fp32"
LOAD_IN_4BIT = False  # QLoRA: NF4 weights with double quantisation, bf16 compute (CUDA + bitsandbytes only)
GRADIENT_CHECKPOINTING = True  # recompute activations in the backward pass: much less memory, ~30% slower
PADDING_FREE = "auto"  # concatenate a batch's examples without padding; "auto": with flash-attn only; True/False
# lora
LORA_R = 16  # rank of the update matrices
LORA_ALPHA = 32  # scale: the update is multiplied by LORA_ALPHA / LORA_R
LORA_DROPOUT = 0.05
LORA_TARGET_MODULES = "all-linear"  # "all-linear" or a comma-separated list, e.g. "q_proj,v_proj"
TRAIN_CONTROL_TOKENS = "auto"  # also train the embedding rows of the control tokens replies end with (<end_of_turn>):
#                                "auto" = where the base model never learned them (a base model); True / False
# training
NUM_TRAIN_EPOCHS = 1.0
MAX_STEPS = -1  # optimizer steps; > 0 overrides NUM_TRAIN_EPOCHS
BATCH_SIZE = 2  # examples per device per micro-batch
GRADIENT_ACCUMULATION_STEPS = 8  # micro-batches per optimizer step
LEARNING_RATE = 2e-4
LR_SCHEDULER = "cosine"  # any transformers scheduler name: "cosine", "linear", "constant", ...
WARMUP_RATIO = 0.03  # share of the optimizer steps spent warming up
WEIGHT_DECAY = 0.0
MAX_GRAD_NORM = 1.0
LOGGING_STEPS = 10  # optimizer steps between progress lines
EVAL_STEPS = 0  # optimizer steps between evaluations; 0 = only before and after training
REPLY_PROMPTS = 20  # held-out prompts answered (greedy) before and after training: stop rate and reply length
SAMPLE_REPLIES = 3  # of those, how many are written out in full into samples.md
REPLY_MAX_TOKENS = 128  # longest reply generated for those measurements
SAVE_STEPS = 200  # optimizer steps between checkpoints; 0 = no intermediate checkpoints
SAVE_TOTAL_LIMIT = 2  # checkpoints kept
SEED = 42
# output
OUTPUT_DIR = "outputs"  # each run gets its own folder below this
RUN_NAME = ""  # run folder name; "" = the start time, e.g. 20261124-093000
RESUME = False  # True: continue the run RUN_NAME (or the newest unfinished run) from its last checkpoint
PREPARE_ONLY = False  # True: stop after tokenization and write prepared.jsonl; no model weights are loaded
REPORT_TO = "none"  # "none", or trackers transformers supports: "tensorboard", "wandb", ...
# ----------------------------------------------------------------------------------------------------
CONFIG = {k: v for k, v in dict(globals()).items() if k.isupper()}


def main(argv: list[str] | None = None) -> Path | None:
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(settings.help_text(Path(__file__).read_text(encoding="utf-8"), CONFIG))
        return None
    cfg = settings.parse_overrides(argv, CONFIG)
    import torch
    from accelerate import PartialState

    # cpu=True without a GPU: a plain PartialState() never joins the other processes on a CPU-only host
    state = PartialState(cpu=not torch.cuda.is_available())
    log = print if state.is_main_process else (lambda *a, **k: None)
    is_main, cuda = state.is_main_process, torch.cuda.is_available()

    # --- data: read and validate every conversation before anything heavy (an error names them all at once)
    run_dir = run_folder.run_dir_for(state, cfg)
    folder = run_dir / ".prepared" if is_main else None  # the validated data; removed when the run ends
    train, evaluation = sources.read_train_and_eval(cfg, run_dir, folder, log)

    with run_folder.removed_on_error(run_dir, folder):  # a failed start leaves nothing behind
        # --- the model's tokenizer and chat template: what it renders, read off probes
        tokenizer, fmt = model_setup.tokenizer_and_format(cfg, log)
        features = train.features + (evaluation.features if evaluation else Counter())  # what the data holds
        preview.check_template_support(fmt, features, cfg, log)

        # --- tokenize and mask, exact to the token id (once, on the main process; the others load its result)
        train_set, eval_set, cut_stats = examples.prepare_once(state, run_dir, train, evaluation, tokenizer, fmt,
                                                               cfg)

    # --- show what will be trained: the summary and first examples here, many examples token by token in report.html
    summary, holds = preview.summarize(log, train, evaluation, train_set, eval_set, cut_stats, features, fmt, cfg)
    preview.show_examples(log, train, train_set, tokenizer, fmt, cfg)
    run_folder.write_config(run_dir, cfg, CONFIG, is_main, log)
    page = report_page.prepared(run_dir, cfg, train, train_set, cut_stats, tokenizer, fmt, summary, holds) \
        if is_main else None
    if page:
        log(f"report: {report_page.write(run_dir, page)}")
    if cfg["PREPARE_ONLY"]:
        if is_main:
            run_folder.write_prepared(run_dir, train_set, train.conversations, log)
        return run_dir

    # --- model and LoRA
    if not cuda:
        library_patches.lean_cpu_lm_head(log)
        library_patches.fsdp_on_cpu(log)
    bf16 = model_setup.training_precision(cfg, cuda, log)
    attn, padding_free = model_setup.attention_and_batching(cfg, cuda, log)
    args = training.training_arguments(cfg, run_dir, bf16, padding_free, eval_set is not None, cuda)
    model = model_setup.load_model(cfg, attn, bf16, state.local_process_index, fmt, tokenizer, log)
    peft_config = model_setup.lora_config(cfg)
    # PEFT trains these rows apart from the frozen embedding; with tied embeddings it serves them to the LM head too
    token_rows = control_tokens.control_tokens_to_train(model, tokenizer, train_set, cfg, state, log)
    peft_config.trainable_token_indices = sorted(token_rows) or None

    # --- train
    trainer = training.make_trainer(model, args, train_set, eval_set, tokenizer, peft_config, run_dir, cfg,
                                    state.num_processes, log)
    training.train(trainer, cfg, run_dir, bool(token_rows), is_main, log)

    # --- save: adapter, tokenizer with its chat template, generation config; replies before and after
    training.save_adapter(trainer, model, run_dir, is_main)
    if is_main:
        sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled  # generating needs every process there
        if evaluation and evaluation.conversations is not None and cfg["REPLY_PROMPTS"] > 0 and not sharded:
            held = (json.loads(row["conversation"]) for row in evaluation.conversations)  # read as needed
            if replies.reply_report(trainer.model, tokenizer, fmt, held, cfg, run_dir, log):
                log(f"sample replies: {run_dir / 'samples.md'}")
        run_folder.finish(run_dir, log)
        page["training"] = report_page.training_payload(run_dir)
        log(f"report: {report_page.write(run_dir, page)} (data, examples, losses, replies)")
    log(f"saved the LoRA adapter, tokenizer and generation config to {run_dir}")
    return run_dir


if __name__ == "__main__":
    errors.run(main)
