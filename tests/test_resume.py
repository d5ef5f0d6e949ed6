"""Nothing lost: a killed run resumes from its last complete checkpoint and continues the same losses;
a finished run is never overwritten; a non-finite loss stops the run and keeps the checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SCRIPT, run_script
from test_end_to_end import pattern_data


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "data.json"
    path.write_text(json.dumps(pattern_data(24, seed=3)))
    return path


def common(small_model, data_file, out):
    return [f"--model_name={small_model}", f"--data_path={data_file}", f"--output_dir={out}", "--max_steps=6",
            "--batch_size=2", "--gradient_accumulation_steps=1", "--logging_steps=1", "--save_steps=2",
            "--save_total_limit=5", "--lora_dropout=0.0", "--preview_examples=0", "--warmup_ratio=0.0"]


def losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_killed_run_resumes_and_continues_its_losses(small_model, data_file, tmp_path):
    reference = run_script(*common(small_model, data_file, tmp_path / "ref"), "--run_name=full")
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = losses(tmp_path / "ref" / "full")
    assert sorted(expected) == [1, 2, 3, 4, 5, 6]

    out = tmp_path / "out"
    run_dir = out / "r"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, str(SCRIPT), *common(small_model, data_file, out), "--run_name=r"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (run_dir / "checkpoint-2" / "trainer_state.json").exists():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # as hard as a crash or a lost machine
    process.wait()
    assert not (run_dir / "DONE").exists()
    assert not (run_dir / "checkpoint-6").exists()

    # Starting it again without --resume is refused: the unfinished run is not overwritten.
    again = run_script(*common(small_model, data_file, out), "--run_name=r")
    assert again.returncode != 0 and "--resume=True" in again.stderr

    resumed = run_script(*common(small_model, data_file, out), "--run_name=r", "--resume=True")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "checkpoint-" in resumed.stdout
    assert (run_dir / "DONE").exists() and (run_dir / "adapter_model.safetensors").exists()
    got = losses(run_dir)
    assert max(got) == 6  # reached the same final step
    for step in range(3, 7):  # the steps after the resume point match the uninterrupted run
        assert got[step] == pytest.approx(expected[step], rel=1e-3, abs=1e-4), (step, got, expected)
    # one report page for the whole run: every step once, the resumed steps' losses as logged last
    page = (run_dir / "report.html").read_text()
    payload = json.loads(page.split('<script id="payload" type="application/json">')[1].split("</script>")[0]
                         .replace("<\\/", "</"))
    assert payload["training"]["loss"] == [[step, got[step]] for step in range(1, 7)]
    assert list(run_dir.glob("report*")) == [run_dir / "report.html"]


def test_finished_run_is_never_overwritten(small_model, data_file, tmp_path):
    args = [*common(small_model, data_file, tmp_path), "--max_steps=1", "--save_steps=0", "--run_name=done"]
    first = run_script(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = tmp_path / "done"
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    second = run_script(*args)
    assert second.returncode != 0
    assert second.stderr.startswith("ERROR:") and "never overwritten" in second.stderr
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_non_finite_loss_stops_and_keeps_the_checkpoint(small_model, data_file, tmp_path):
    # An absurd learning rate sends the weights to ~1e30 after step 1, so step 2's loss is not finite.
    result = run_script(*common(small_model, data_file, tmp_path), "--run_name=nan", "--learning_rate=1e30",
                        "--save_steps=1", "--lr_scheduler=constant")
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ERROR: the loss became NaN or infinite at step 2"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    run_dir = tmp_path / "nan"
    assert (run_dir / "checkpoint-1" / "adapter_model.safetensors").exists()
    assert "checkpoint-1" in result.stderr
    assert not (run_dir / "checkpoint-2").exists() and not (run_dir / "DONE").exists()


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(small_model, data_file, tmp_path):
    run_dir = tmp_path / "int"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [*common(small_model, data_file, tmp_path), "--run_name=int", "--save_steps=0", "--max_steps=50"]
    process = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not ((run_dir / "metrics.jsonl").exists() and '"loss"' in (run_dir / "metrics.jsonl").read_text()):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, stderr[-2000:]
    assert "stopped by Ctrl-C" in stderr and "--resume=True --run_name=int" in stderr
    checkpoints = list(run_dir.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "trainer_state.json").exists()
    assert (checkpoints[0] / "adapter_model.safetensors").exists()
