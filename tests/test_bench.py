"""The benchmarks run on the CPU as smoke tests: they finish, write their results file, and what they compare is
the same computation on each side. No speed figure is asserted (that is what the GPU runs are for)."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT


def run_bench(name, *args, timeout=600):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / name), *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


def test_train_speed_tiny(tmp_path):
    """bench/train_speed.py --tiny: a tiny Gemma-2 on the CPU through the original path and the script's default."""
    out = tmp_path / "train.json"
    result = run_bench("train_speed.py", "--tiny", "--out", str(out))
    assert f"wrote {out}" in result.stdout
    report = json.loads(out.read_text())
    assert report["tiny"] and report["model"]["config"]["attn_logit_softcapping"] == 50.0
    paths = report["paths"]
    original, default = paths["original"], paths["default"]
    assert (original["attn"], original["loss"], original["batching"]) == ("eager", "full_logits", "random")
    # the default path is the script's own choice: on the CPU, eager for a softcapped model, grouped padded batches
    assert (default["attn"], default["loss"], default["batching"]) == ("eager", "fused", "grouped")
    assert "CPU" in default["why"]
    assert "CPU" in paths["candidate_flex_padding_free"]["skipped"]
    assert paths["qlora"]["quantized"] and paths["qlora"]["tokens_per_s"] > 0  # bitsandbytes' CPU kernels
    for path in (original, default):
        assert path["measured_steps"] == report["measured_steps"] == len(path["steps"]) == 2
        assert path["tokens_per_s"] > 0 and path["trained_tokens_per_s"] > 0
        assert 0 < path["padding_efficiency"] <= 1 and path["lora_params"] > 0
        assert all(math.isfinite(step["loss"]) and step["attention_flops"] > 0 for step in path["steps"])
    for a, b in zip(original["steps"], default["steps"]):
        # equal work per optimizer step: the same examples, the same real and trained tokens
        assert (a["examples"], a["tokens"], a["trained_tokens"]) == (b["examples"], b["tokens"], b["trained_tokens"])
        assert a["tokens"] >= report["data"]["tokens_per_step"]
        # full-logits loss on random batches and fused loss on grouped batches: the same loss (dropout aside)
        assert abs(a["loss"] - b["loss"]) < 1e-2 * abs(a["loss"]), (a["loss"], b["loss"])
        assert b["padded_tokens"] <= a["padded_tokens"]  # grouping by length pads less
    assert report["summary"]["default_vs_original_tokens_per_s"] > 0
    assert report["targets"] is None  # no targets are judged on a CPU smoke run
    for package in ("torch", "transformers", "trl", "peft"):
        assert report["versions"][package]


def test_prepare_speed_smoke(small_model, tmp_path):
    """bench/prepare_speed.py on 300 conversations: both preparations see the same tokens; the trained tokens differ
    by exactly the one newline per reply that TRL's Gemma training template also trains."""
    out = tmp_path / "prepare.json"
    run_bench("prepare_speed.py", "--n", "300", "--model", str(small_model), "--out", str(out))
    report = json.loads(out.read_text())
    assert report["ours"]["examples"] == report["trl"]["examples"] == 300
    assert report["ours"]["seconds"] > 0 and report["trl"]["seconds"] > 0
    check = report["check"]
    assert check["same_tokens"] and report["trl"]["sample_same_input_ids"] == report["trl"]["sample_size"] == 300
    assert check["difference_is_one_newline_per_reply"]
    assert check["trained_token_difference"] == check["assistant_replies"] > 0


def test_split_cost_smoke(small_model, tmp_path):
    """bench/split_cost.py on 200 conversations: Qwen2.5's template gives one example per conversation, Qwen3's one
    per reply, so more examples and more tokens for the same conversations."""
    out = tmp_path / "split.json"
    run_bench("split_cost.py", "--n", "200", "--out", str(out))
    report = json.loads(out.read_text())
    preserving, split = report["results"]["qwen2_5"], report["results"]["qwen3"]
    assert preserving["prefix_preserving"] and not split["prefix_preserving"]
    assert preserving["examples"] == 200 < split["examples"]
    assert split["tokens"] > preserving["tokens"] and report["ratio"]["tokens"] > 1
    extra = split["split_stats"]["extra examples: replies kept in their inference context"]
    assert split["examples"] == 200 + extra


def test_cpu_train_smoke(small_model, tmp_path):
    """bench/cpu_train.py with two short variants: both run the real script; bf16's losses follow fp32's."""
    out = tmp_path / "cpu.json"
    run_bench("cpu_train.py", "--steps", "2", "--batch_size", "1", "--max_seq_length", "128",
              "--variants", "fp32 checkpointing,bf16 checkpointing", "--out", str(out))
    report = json.loads(out.read_text())
    fp32, bf16 = report["results"]["fp32 checkpointing"], report["results"]["bf16 checkpointing"]
    assert fp32["precision"] == "fp32" and bf16["precision"] == "bf16"
    assert fp32["steps"] == bf16["steps"] == 2
    for a, b in zip(fp32["losses"], bf16["losses"]):
        assert abs(a - b) < 0.03 * a, (fp32["losses"], bf16["losses"])
    assert 0 < bf16["peak_memory_gib"] and fp32["tokens_per_s"] > 0 and bf16["tokens_per_s"] > 0


def test_prepare_memory_smoke(tmp_path):
    """bench/prepare_memory.py: the real script in prepare-only mode on two sizes of data, its memory sampled."""
    out = tmp_path / "memory.json"
    result = run_bench("prepare_memory.py", "--n", "300", "600", "--out", str(out))
    assert f"wrote {out}" in result.stdout
    rows = json.loads(out.read_text())["results"]
    assert [r["conversations"] for r in rows] == [300, 600]
    for r in rows:
        assert f"training examples                     {r['conversations']}" in r["summary"]
        assert 0 < r["peak_anonymous_gib"] <= r["peak_resident_gib"] and r["seconds"] > 0


def test_quick_start_smoke(small_model, tmp_path):
    """bench/quick_start.py on a shortened first command: every phase is timed in order, memory is sampled in
    each, and the run's own reply figures are recorded."""
    out = tmp_path / "quick.json"
    run_bench("quick_start.py", "--out", str(out), "--", "--max_steps=2", "--logging_steps=1", "--eval_fraction=0.03",
              "--max_seq_length=256", "--reply_prompts=2", "--reply_max_tokens=48")
    report = json.loads(out.read_text())
    assert list(report["phases_s"]) == ["start-up and data", "model loading", "first evaluation", "training",
                                        "last evaluation", "replies", "saving"]
    assert all(s >= 0 for s in report["phases_s"].values())
    assert sum(report["phases_s"].values()) == pytest.approx(report["seconds"], abs=1.0)
    assert report["peak_phase"] in report["phases_s"] and 0.3 < report["peak_pss_gib"] < 64
    assert report["peak_pss_gib"] == max(report["peak_pss_gib_by_phase"].values())
    assert report["prompts"] == 2 and len(report["replies_after"]) == 2
    assert 0 <= report["stop_rate_after"] <= 1 and report["setup_s"] is None
    assert report["extra"][0] == "--max_steps=2" and report["versions"]["torch"]


def test_gpu_check_tiny(tmp_path):
    """bash bench/gpu_check.sh --tiny: every part of the GPU check on the CPU, each within its limit, its figures
    in the output folder, and the summary of them all."""
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--tiny"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "OUT": str(tmp_path)})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    parts = (tmp_path / "parts.txt").read_text().splitlines()
    assert [p.split(":")[0] for p in parts] == ["default", "original", "qlora", "script"]
    assert all(": exit 0 in " in p for p in parts), parts
    summary = json.loads((tmp_path / "summary.json").read_text())
    for name in ("default", "original", "qlora"):
        assert summary[name]["tokens_per_s"] > 0, name
    assert summary["default_vs_original_tokens_per_s"] > 0
    assert summary["script"]["steps"] == 2 and summary["script"]["finished"]
    assert all(math.isfinite(x) for x in summary["script"]["losses"])
    assert json.loads((tmp_path / "versions.json").read_text())["bitsandbytes"]


def test_report_cost_smoke(small_model, tmp_path):
    out = tmp_path / "report.json"
    run_bench("report_cost.py", "--n", "400", "--out", str(out))
    figures = json.loads(out.read_text())["figures"]
    assert figures["examples_shown"] == 300 and 0 < figures["report_bytes"] < 5 * 2**20
    assert figures["report_s"] > 0 and figures["prepare_dataset_s"] > 0
