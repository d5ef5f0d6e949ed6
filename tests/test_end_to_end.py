"""The real script, end to end, on the real small model (CPU): it trains, the trained-token loss falls,
and the saved adapter loads with PEFT and answers in the learned pattern, stopping at its end of turn."""

import json
import random
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, run_script
from multiturn import control_tokens, errors, examples, model_setup, replies, settings

FAKE_TOKEN = "hf_notARealTokenButSecret123"
REPLY = "In short: noted.\n\nI will keep that in mind."
SUBJECTS = ["the red door", "my cat", "the budget", "a blue car", "the meeting", "our garden", "the old bridge",
            "my sister's book", "the train to Lyon", "a new laptop", "the winter coat", "the library card"]
VERBS = ["is late", "needs paint", "was sold", "looks tired", "moved to Tuesday", "grew tall", "is closed",
         "got wet", "costs more now", "broke again"]


def pattern_data(n: int, seed: int = 0) -> list:
    """Conversations whose every reply is the same: a base model learns it in a few dozen steps."""
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        turns = []
        for _ in range(rng.choice([1, 2])):
            turns += [{"role": "user", "content": f"Remember: {rng.choice(SUBJECTS)} {rng.choice(VERBS)}."},
                      {"role": "assistant", "content": REPLY}]
        data.append(turns)
    return data


@pytest.fixture(scope="module")
def trained(small_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "pattern.json"
    data.write_text(json.dumps(pattern_data(60)))
    result = run_script(
        f"--model_name={small_model}", f"--data_path={data}", f"--output_dir={root}", "--run_name=run",
        "--max_steps=30", "--batch_size=4", "--gradient_accumulation_steps=1", "--learning_rate=5e-4",
        "--logging_steps=5", "--eval_fraction=0.1", "--save_steps=0", "--warmup_ratio=0.0", "--sample_replies=1",
        env={"HF_TOKEN": FAKE_TOKEN},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "run", result


def test_run_reports_cpu_fallback_and_markers(trained, ft):
    _, result = trained
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARNING:")]
    assert len(warnings) == 1 and "CUDA" in warnings[0]
    assert ("bfloat16" if model_setup.cpu_has_native_bf16() else "float32") in warnings[0]  # bf16 where the CPU has it
    assert "trained closing of each reply: '<end_of_turn>'" in result.stdout
    assert "system messages: folded into the first user turn" in result.stdout
    assert "step    30/30" in result.stdout


def test_trained_token_loss_goes_down(trained):
    run_dir, _ = trained
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert len(losses) == 30  # every optimizer step's loss (the terminal shows every 5th)
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5]), losses
    assert len(evals) == 2 and evals[-1] < 0.5 * evals[0], evals  # before and after training


def test_outputs_are_complete(trained, small_model):
    run_dir, _ = trained
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "training_config.json",
                 "generation_config.json", "loss.png", "samples.md", "DONE"):
        assert (run_dir / name).exists(), name
    samples = (run_dir / "samples.md").read_text()
    assert samples.count("**Before training:**") == 1 and f"**After training:** {REPLY}" in samples
    assert "stopped at the end of turn" in samples
    config = json.loads((run_dir / "training_config.json").read_text())
    assert config["MAX_STEPS"] == 30 and config["MODEL_NAME"] == str(small_model)
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    assert tokenizer.chat_template and "<start_of_turn>" in tokenizer.chat_template
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in GenerationConfig.from_pretrained(run_dir).eos_token_id


def test_stop_rate_is_measured_before_and_after(trained):
    """Every run with an eval set answers its held-out prompts before and after training and reports how many
    replies stop on their own: here the replies were learned, so they all stop and open like the references."""
    run_dir, result = trained
    report = json.loads((run_dir / "replies.json").read_text())
    assert report["prompts"] == 6  # eval_fraction 0.1 of 60 conversations
    assert report["after"]["stop_rate"] == 1.0 and report["after"]["same_opening"] == 1.0
    assert report["after"]["mean_tokens"] == pytest.approx(report["reference_mean_tokens"], abs=2)
    assert report["before"]["same_opening"] < 1.0  # the base model did not know the pattern
    assert "stopped at the end of turn" in result.stdout
    rows = report["replies"]  # every prompt's replies, for a user to judge them one by one
    assert len(rows) == 6 and all(r["prompt"] and r["reference"] for r in rows)
    assert sum(r["after"]["stopped"] for r in rows) / 6 == report["after"]["stop_rate"]


def test_adapter_loads_and_stops_at_end_of_turn(trained, small_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    run_dir, _ = trained
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    base = AutoModelForCausalLM.from_pretrained(small_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, run_dir).eval()
    generation_config = GenerationConfig.from_pretrained(run_dir)
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    for prompt in ["Remember: the kitchen tap drips.", "Remember: my bike has a flat tyre."]:  # unseen prompts
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, generation_config=generation_config, max_new_tokens=40, do_sample=False)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        assert new[-1] == end_of_turn, tokenizer.decode(new)  # it stopped by itself, not at max_new_tokens
        assert tokenizer.decode(new[:-1]).strip() == REPLY


def test_overrides_are_strict(ft):
    assert settings.parse_overrides(["--max_steps=5", "--learning_rate=1e-4"], ft.CONFIG)["MAX_STEPS"] == 5
    assert settings.parse_overrides(["--model_name=org/model-1"], ft.CONFIG)["MODEL_NAME"] == "org/model-1"
    assert settings.parse_overrides(["--num_train_epochs=2"], ft.CONFIG)["NUM_TRAIN_EPOCHS"] == 2.0
    with pytest.raises(errors.UserError, match="unknown setting --max_step"):
        settings.parse_overrides(["--max_step=5"], ft.CONFIG)
    with pytest.raises(errors.UserError, match="--batch_size=two: expected int"):
        settings.parse_overrides(["--batch_size=two"], ft.CONFIG)
    with pytest.raises(errors.UserError, match="--prepare_only=1: expected bool"):
        settings.parse_overrides(["--prepare_only=1"], ft.CONFIG)
    with pytest.raises(errors.UserError, match="train_on"):
        settings.parse_overrides(["--train_on=first"], ft.CONFIG)
    assert settings.parse_overrides(["--precision=fp32"], ft.CONFIG)["PRECISION"] == "fp32"
    with pytest.raises(errors.UserError, match="precision='fp16' is not one of"):
        settings.parse_overrides(["--precision=fp16"], ft.CONFIG)
    kwargs = settings.parse_overrides(["--chat_template_kwargs={'enable_thinking': False}"], ft.CONFIG)
    assert kwargs["CHAT_TEMPLATE_KWARGS"] == {"enable_thinking": False}
    with pytest.raises(errors.UserError, match="--chat_template_kwargs=yes: expected dict"):
        settings.parse_overrides(["--chat_template_kwargs=yes"], ft.CONFIG)


def test_auto_or_bool_settings_take_all_three(ft):
    for value, expected in (("auto", "auto"), ("True", True), ("False", False)):
        assert settings.parse_overrides([f"--train_control_tokens={value}"], ft.CONFIG)["TRAIN_CONTROL_TOKENS"] == expected
        assert settings.parse_overrides([f"--padding_free={value}"], ft.CONFIG)["PADDING_FREE"] == expected
    with pytest.raises(errors.UserError, match="train_control_tokens='yes' is not one of"):
        settings.parse_overrides(["--train_control_tokens=yes"], ft.CONFIG)


def test_config_file_sets_constants_in_order(ft, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"max_steps": 7, "LEARNING_RATE": 1, "chat_template_kwargs": {"enable_thinking": False},
                                "train_control_tokens": False}))
    cfg = settings.parse_overrides([f"--config={path}", "--max_steps=9"], ft.CONFIG)
    assert cfg["MAX_STEPS"] == 9 and cfg["LEARNING_RATE"] == 1.0  # a later flag wins; an int is a valid float
    assert cfg["CHAT_TEMPLATE_KWARGS"] == {"enable_thinking": False} and cfg["TRAIN_CONTROL_TOKENS"] is False
    assert settings.parse_overrides(["--max_steps=9", f"--config={path}"], ft.CONFIG)["MAX_STEPS"] == 7
    path.write_text(json.dumps({"max_stepz": 7}))
    with pytest.raises(errors.UserError, match=r"unknown setting 'max_stepz' in .*run.json \(did you mean .*--max_steps"):
        settings.parse_overrides([f"--config={path}"], ft.CONFIG)
    path.write_text(json.dumps({"batch_size": "2"}))
    with pytest.raises(errors.UserError, match=r"'batch_size': \"2\" in .*run.json: expected int"):
        settings.parse_overrides([f"--config={path}"], ft.CONFIG)
    path.write_text("{'max_steps': 7}")
    with pytest.raises(errors.UserError, match="not valid JSON"):
        settings.parse_overrides([f"--config={path}"], ft.CONFIG)
    with pytest.raises(errors.UserError, match="cannot read it"):
        settings.parse_overrides([f"--config={tmp_path / 'missing.json'}"], ft.CONFIG)


def test_a_runs_training_config_repeats_it(ft, trained):
    """training_config.json holds every constant as used: given back with --config, it sets them all again."""
    run_dir, _ = trained
    saved = json.loads((run_dir / "training_config.json").read_text())
    assert settings.parse_overrides([f"--config={run_dir / 'training_config.json'}"], ft.CONFIG) == saved


def test_bad_override_stops_without_traceback(tmp_path):
    result = run_script("--lora_rank=8", f"--output_dir={tmp_path}")
    assert result.returncode != 0
    assert result.stderr.startswith("ERROR: unknown setting --lora_rank") and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_help_lists_every_setting_with_its_default_and_comment(ft, tmp_path):
    result = run_script("--help", f"--output_dir={tmp_path}", timeout=120)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("Fine-tune a chat model") and not any(tmp_path.iterdir())
    for name, default in ft.CONFIG.items():
        assert f"  --{name.lower()}={default!r}\n" in text or text.endswith(f"  --{name.lower()}={default!r}"), name
    for group in ("data", "model", "lora", "training", "output"):
        assert f"\n{group}\n" in text, group
    # a comment that runs on over two lines in the script is whole in the help
    assert "None leaves out the conversations holding that role" in text
    order = ("\n  --data_path=", "\nmodel\n", "\n  --model_name=", "\n  --lora_r=")
    assert [text.index(s) for s in order] == sorted(text.index(s) for s in order)


def test_nothing_heavy_loads_before_the_data_is_validated():
    """The script and every module of its package import without torch, transformers, TRL, PEFT or datasets: a
    data error is reported in a second, not after the libraries load."""
    code = ("import sys, pkgutil, importlib; sys.path.insert(0, 'scripts'); import multi_turn_finetuning, multiturn; "
            "[importlib.import_module('multiturn.' + m.name) for m in pkgutil.iter_modules(multiturn.__path__)]; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets', 'accelerate') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"heavy modules imported at start: {result.stdout}"


def test_hub_token_is_never_printed_or_saved(trained):
    run_dir, result = trained
    assert FAKE_TOKEN not in result.stdout + result.stderr
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def test_control_token_row_is_trained_where_the_base_model_never_learned_it(ft, trained, small_model):
    """The base model gives <end_of_turn> almost no probability where replies end, so "auto" trains its embedding
    row (tied to the LM head) with the adapter. After training the merged model gives it a high probability there,
    and "auto" would find nothing left to train."""
    import datasets
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from multiturn.template_probes import detect_chat_format

    run_dir, result = trained
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert json.loads((run_dir / "adapter_config.json").read_text())["trainable_token_indices"] == [end_of_turn]
    assert "control tokens: <end_of_turn> (p=" in result.stdout
    fmt = detect_chat_format(tokenizer)
    rows = [ex for messages in pattern_data(6, seed=7) for ex in examples.tokenize_conversation(tokenizer, fmt, messages)]
    dataset = datasets.Dataset.from_dict({"input_ids": [r[0] for r in rows], "labels": [r[1] for r in rows]})
    assert control_tokens.generated_control_tokens(tokenizer, dataset) == [end_of_turn]
    base = AutoModelForCausalLM.from_pretrained(small_model, dtype=torch.float32)
    before = control_tokens.token_probabilities(base, dataset, [end_of_turn])[end_of_turn]
    merged = PeftModel.from_pretrained(base, run_dir).merge_and_unload()
    after = control_tokens.token_probabilities(merged, dataset, [end_of_turn])[end_of_turn]
    assert before < control_tokens.UNLEARNED < 0.5 < after, (before, after)


def test_replies_come_back_in_the_order_of_the_prompts(ft, small_model):
    """generate_replies batches prompts by length; each reply must still be the one its own prompt gets alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from multiturn.template_probes import detect_chat_format

    tokenizer = AutoTokenizer.from_pretrained(small_model)
    fmt = detect_chat_format(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(small_model, dtype=torch.float32).eval()
    prompts = [[{"role": "user", "content": text}] for text in
               ("Name a colour. " * 30, "Hi", "What is the capital of France? " * 8, "Count to three.")]
    stop = [tokenizer.convert_tokens_to_ids("<end_of_turn>")]
    alone = [replies.generate_replies(model, tokenizer, fmt, [p], stop, 6)[0] for p in prompts]
    for tokens in (64, 100_000):  # one prompt per batch, then all in one batch
        assert replies.generate_replies(model, tokenizer, fmt, prompts, stop, 6, batch_tokens=tokens) == alone
    assert len({r["text"] for r in alone}) > 1  # the prompts get different replies, so order is visible


def test_the_report_page_shows_how_the_run_went(trained):
    """report.html after training, in a real browser: every step's loss and the evaluations as curves, the replies
    before and after with where each stopped, the stop rates, and links to the adapter's files."""
    import re

    from browser import open_page, screenshot

    run_dir, result = trained
    assert f"report: {run_dir / 'report.html'} (data, examples, losses, replies)" in result.stdout
    page = open_page(run_dir / "report.html")
    assert page.body.get("data-ready") == "1" and page.console_errors == [] and page.ids["errors"] == ""
    curves = dict(re.findall(r'<polyline class="(\w+)"[^>]*points="([^"]*)"', page.dom))
    assert len(curves["loss"].split()) == 30 and len(curves["eval_loss"].split()) == 2  # every step; before, after
    replies = json.loads((run_dir / "replies.json").read_text())
    rows = re.findall(r"<tr><td class=\"reply\">", page.dom)
    assert len(rows) == len(replies["replies"]) > 0
    stops = re.findall(r"\[(stopped after|cut at) (\d+) tokens\]", page.dom)
    expected = [("stopped after" if r[side]["stopped"] else "cut at", str(r[side]["tokens"]))
                for r in replies["replies"] for side in ("before", "after")]
    assert stops == expected
    assert f"{round(replies['after']['stop_rate'] * 100)}%" in page.ids["training"]
    links = re.findall(r'<li><a href="([^"]+)">', page.dom)
    assert "adapter_model.safetensors" in links and all((run_dir / link).exists() for link in links)
    screenshot(run_dir / "report.html", "report-trained")
