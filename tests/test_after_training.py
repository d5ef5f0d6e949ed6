"""What comes after training: merging the adapter (scripts/merge_adapter.py) and chatting with the
result (scripts/chat.py), on a tiny adapter trained once by the real fine-tuning script.

    python -m pytest tests/test_after_training.py -q        # about 2-3 minutes on a small CPU machine
"""

import copy
import json
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_script
from multiturn import run_folder

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft x transformers

CHAT = ROOT / "scripts" / "chat.py"
MERGE = ROOT / "scripts" / "merge_adapter.py"

CONVERSATIONS = [
    [{"role": "user", "content": f"What is {i} plus {i}?"},
     {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
     {"role": "user", "content": "Thanks!"},
     {"role": "assistant", "content": "You're welcome."}]
    for i in range(8)
]
PROMPTS = ["What is 3 plus 3?", "Name a colour of the sky."]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread, here and in the scripts run as subprocesses: the inputs are a few dozen tokens,
    where keeping two threads in step costs more than it saves (several times more on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def chat():
    import chat

    return chat


@pytest.fixture(scope="module")
def merge_adapter():
    import merge_adapter

    return merge_adapter


@pytest.fixture(scope="module")
def run_dir(small_model, tmp_path_factory) -> Path:
    """A tiny LoRA adapter trained by the real script: 2 optimizer steps on 8 short conversations.

    LoRA's B starts at zero and the first step runs at lr 0 (warmup), so the adapter is one Adam
    update of about the learning rate on each weight: small, but it moves the logits measurably.
    """
    tmp = tmp_path_factory.mktemp("after_training")
    data = tmp / "conversations.json"
    data.write_text(json.dumps(CONVERSATIONS))
    result = run_script("--model_name=" + str(small_model), f"--data_path={data}", f"--output_dir={tmp / 'runs'}",
                        "--run_name=t", "--max_steps=2", "--batch_size=2", "--gradient_accumulation_steps=1",
                        "--logging_steps=1", "--save_steps=0", "--lora_r=8", "--preview_examples=0")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp / "runs" / "t"
    assert (run / "DONE").exists() and (run / "adapter_model.safetensors").exists()
    return run


@pytest.fixture(scope="module")
def adapter_model(run_dir, small_model):
    """Reference: base (fp32) + adapter through peft, built here independently of the scripts under test."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(small_model, dtype=torch.float32)
    return PeftModel.from_pretrained(base, run_dir).eval()


@pytest.fixture(scope="module")
def merged_dir(run_dir, merge_adapter, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("merged") / "model"
    assert merge_adapter.main([str(run_dir), "--out", str(out), "--dtype", "float32"]) == out
    return out


@pytest.fixture(scope="module")
def merged_model(merged_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(merged_dir).eval()  # plain transformers, no peft


def _input_ids(tokenizer, prompt: str) -> torch.Tensor:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


@torch.inference_mode()
def _logits(model, tokenizer, prompt: str) -> torch.Tensor:
    return model(input_ids=_input_ids(tokenizer, prompt)).logits[0].float()


# ----------------------------------------------------------------------------------------------------
# merging


@pytest.mark.parametrize("prompt", PROMPTS)
def test_merged_model_equals_base_plus_adapter(adapter_model, merged_model, tokenizer, prompt):
    with_adapter = _logits(adapter_model, tokenizer, prompt)
    with adapter_model.disable_adapter():
        base = _logits(adapter_model, tokenizer, prompt)
    merged = _logits(merged_model, tokenizer, prompt)
    adapter_effect = (with_adapter - base).abs().max().item()
    merge_error = (merged - with_adapter).abs().max().item()
    # The adapter must really change the model, or the equality below would prove nothing.
    assert adapter_effect > 0.1, f"the trained adapter barely changes the logits ({adapter_effect:.2e})"
    # fp32 merge: only the order of float additions differs from base + adapter.
    assert merge_error < 1e-3, f"merged logits differ from base + adapter by {merge_error:.2e}"
    assert merge_error < adapter_effect / 100


def test_merged_folder_is_complete(merged_dir, run_dir, merged_model):
    files = {p.name for p in merged_dir.iterdir()}
    assert "model.safetensors" in files and "adapter_config.json" not in files
    assert not any(p.name.startswith(".") for p in merged_dir.parent.iterdir()), "staging folder left behind"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert tokenizer.chat_template == (run_dir / "chat_template.jinja").read_text()
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in merged_model.generation_config.eos_token_id
    assert json.loads((merged_dir / "merge_info.json").read_text())["dtype"] == "float32"


def test_merge_refuses_non_empty_output(run_dir, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("precious\n")
    result = run_script(str(run_dir), f"--out={out}", "--dtype=float32", script=MERGE, timeout=120)
    assert result.returncode != 0
    assert "ERROR:" in result.stderr and "not empty" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious\n"


def test_merge_refuses_folder_without_adapter(tmp_path):
    result = run_script(str(tmp_path), f"--out={tmp_path / 'merged'}", script=MERGE, timeout=120)
    assert result.returncode != 0 and "ERROR:" in result.stderr and "no LoRA adapter" in result.stderr
    assert not (tmp_path / "merged").exists()


def test_merge_notes_qlora_run(run_dir, tmp_path):
    """A QLoRA run is detected from training_config.json (the merge itself then loads the base unquantized)."""
    assert run_folder.trained_in_4bit(run_dir) is False
    (tmp_path / "training_config.json").write_text(json.dumps({"LOAD_IN_4BIT": True}))
    assert run_folder.trained_in_4bit(tmp_path) is True
    assert run_folder.trained_in_4bit(tmp_path / "checkpoint-10") is True


# ----------------------------------------------------------------------------------------------------
# chatting


def test_chat_prompt_prints_the_reply(run_dir, chat, adapter_model, tokenizer):
    """One reply from the command line, streamed to stdout, equal to the greedy reply computed here."""
    result = run_script(str(run_dir), "--prompt", PROMPTS[0], "--max_new_tokens", "8", script=CHAT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "no reply printed"
    assert "Traceback" not in result.stderr
    prompt = chat.render_prompt(tokenizer, [{"role": "user", "content": PROMPTS[0]}])
    stop_ids = chat.stop_token_ids(run_dir, adapter_model, tokenizer, log=print)
    reply, new_ids, _ = chat.generate(adapter_model, tokenizer, prompt, stop_ids, max_new_tokens=8)
    assert 0 < len(new_ids) <= 8
    assert result.stdout.strip() == reply


def test_generate_stops_at_a_stop_token_or_the_limit(chat, adapter_model, tokenizer):
    prompt = chat.render_prompt(tokenizer, [{"role": "user", "content": PROMPTS[1]}])
    never = [tokenizer.pad_token_id]  # a greedy model never writes padding
    _, ids, why = chat.generate(adapter_model, tokenizer, prompt, never, max_new_tokens=4)
    assert (len(ids), why) == (4, "max_new_tokens")
    # Declare the second token it writes a stop token: generation must end right there.
    stop = ids[1]
    assert ids[0] != stop
    _, stopped_ids, why = chat.generate(adapter_model, tokenizer, prompt, [stop], max_new_tokens=20)
    assert (stopped_ids, why) == (ids[:2], "end_of_turn")


def test_stop_ids_include_the_end_of_turn_token(chat, run_dir, merged_dir, adapter_model, tokenizer):
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    for folder in (run_dir, merged_dir):
        stop_ids = chat.stop_token_ids(folder, adapter_model, tokenizer, log=print)
        assert end_of_turn in stop_ids and tokenizer.eos_token_id in stop_ids
    assert chat.inspect_folder(run_dir, None)["kind"] == "adapter"
    assert chat.inspect_folder(merged_dir, None)["kind"] == "model"


def test_system_prompt_is_folded_when_the_template_rejects_it(chat, tokenizer):
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
               {"role": "user", "content": "Bye"}]
    text = chat.render_prompt(tokenizer, history, system="Be brief.")
    assert text == ("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
                    "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")
    assert history[0]["content"] == "Hi", "the caller's history must not be changed"
    with_system = copy.copy(tokenizer)  # the template is an attribute of the copy; the original keeps Gemma's
    with_system.chat_template = ("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}<eos>{% endfor %}"
                                 "{% if add_generation_prompt %}[assistant]{% endif %}")
    assert chat.render_prompt(with_system, history[:1], system="S") == "[system]S<eos>[user]Hi<eos>[assistant]"


def test_chat_refuses_folder_without_adapter_or_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model\n")
    result = run_script(str(tmp_path), "--prompt", "hi", script=CHAT, timeout=120)
    assert result.returncode != 0
    assert "ERROR:" in result.stderr and "neither a LoRA adapter" in result.stderr
    assert "Traceback" not in result.stderr
