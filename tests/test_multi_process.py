"""Several processes: the script under `accelerate launch`, and the launch configs in configs/accelerate.

Two real runs on the CPU, shared by the tests below (about two minutes together):
  - two processes (configs/accelerate/cpu_2proc.yaml, gloo), batch 1 per process;
  - one process, batch 2.
The data holds exactly two conversations of different lengths, so in both runs every optimizer step sees
both of them whatever order the samplers choose: the two-process run must then reproduce the
single-process loss and gradient norm (the loss is averaged over the trained tokens of all processes).
The learning rate is tiny and LoRA dropout is off, so the runs are deterministic.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "multi_turn_finetuning.py"
CONFIGS = ROOT / "configs" / "accelerate"
LEARNING_RATE = 1e-6
RUN_TIMEOUT = 420  # seconds; a hung rendezvous or collective ends the test instead of the session

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "The capital of France is Paris."}],
    [{"role": "user", "content": "Name three primary colours, please."},
     {"role": "assistant", "content": "Red, yellow and blue are the three primary colours of paint."},
     {"role": "user", "content": "And of light?"},
     {"role": "assistant", "content": "For light they are red, green and blue."}],
]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill a process and everything it started (torchrun starts its workers in sessions of their own)."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    proc.kill()


def _run(cmd: list[str], timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """Run a command; past the timeout the launcher and all its workers are killed and the test fails."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:6])} ... did not finish in {timeout} s\n--- stdout\n{out[-3000:]}"
                    f"\n--- stderr\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _overrides(small_model: Path, data: Path, out: Path, batch_size: int) -> list[str]:
    return [f"--model_name={small_model}", f"--data_path={data}", f"--output_dir={out}", "--run_name=r",
            "--max_steps=2", f"--batch_size={batch_size}", "--gradient_accumulation_steps=1", "--logging_steps=1",
            "--save_steps=0", "--preview_examples=0", f"--learning_rate={LEARNING_RATE}", "--lora_dropout=0.0",
            "--precision=fp32"]  # 2 x batch 1 against 1 x batch 2 is an exactness check: no bf16 rounding


def _finished(result: subprocess.CompletedProcess, out: Path) -> Path:
    assert result.returncode == 0, f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}" \
                                   f"\n--- stderr\n{result.stderr[-3000:]}"
    run_dir = out / "r"
    assert (run_dir / "DONE").exists(), "the run did not mark itself finished"
    return run_dir


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "two.json"
    path.write_text(json.dumps(CONVERSATIONS))
    return path


def _script_run(out: Path, small_model: Path, data_file: Path, config: str | None, *extra: str):
    """The script in two processes under `accelerate launch --config_file CONFIG` (batch 1 each), or in one
    process (config None, batch 2): the same global batch. Returns (the process, the finished run folder)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config)] \
        if config else [sys.executable]
    result = _run([*launch, str(SCRIPT), *_overrides(small_model, data_file, out, batch_size=1 if config else 2),
                   *extra])
    return result, _finished(result, out)


@pytest.fixture(scope="module")
def two_process_run(small_model, data_file, tmp_path_factory):
    return _script_run(tmp_path_factory.mktemp("two_processes"), small_model, data_file, "cpu_2proc.yaml")


@pytest.fixture(scope="module")
def fsdp_run(small_model, data_file, tmp_path_factory):
    """FSDP2 on two CPU processes (configs/accelerate/cpu_fsdp_2proc.yaml): the model sharded, batch 1 each."""
    return _script_run(tmp_path_factory.mktemp("fsdp"), small_model, data_file, "cpu_fsdp_2proc.yaml")


@pytest.fixture(scope="module")
def one_process_plain_run(small_model, data_file, tmp_path_factory):
    """One process, batch 2, without trained control-token rows (which FSDP does not train): FSDP's reference."""
    return _script_run(tmp_path_factory.mktemp("one_process_plain"), small_model, data_file, None,
                       "--train_control_tokens=False")


@pytest.fixture(scope="module")
def one_process_run(small_model, data_file, tmp_path_factory):
    return _script_run(tmp_path_factory.mktemp("one_process"), small_model, data_file, None)


def _metrics(run_dir: Path) -> list[dict]:
    """The per-step training records (those with a loss) of metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if "loss" in r]


def _first_per_step(records: list[dict]) -> dict:
    by_step = {}
    for r in records:
        by_step.setdefault(r["step"], r)
    return by_step


def _listing(run_dir: Path) -> list[str]:
    """The run folder's entries, less hidden ones (a data cache is no part of the saved adapter)."""
    return sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))


def _tensors(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter_model.safetensors"))


# ----------------------------------------------------------------------------------------------------
# (a) two processes train, report once and save a normal adapter


def test_two_processes_report_once(two_process_run):
    result, _ = two_process_run
    output = result.stdout + result.stderr
    for line in ("conversations read", "trained tokens", "run folder:", "attention:",
                 "saved the LoRA adapter, tokenizer and generation config"):
        assert output.count(line) == 1, f"{line!r} printed {output.count(line)} times, expected once\n{output[-4000:]}"
    effective = "effective batch: 1 per device x 1 accumulation x 2 processes = 2 examples per optimizer step"
    assert output.count(effective) == 1, output[-4000:]
    for step in (1, 2):
        assert output.count(f"step {step:>5}/2 |") == 1, f"progress line of step {step} not printed exactly once"


def test_two_processes_log_each_step_once(two_process_run):
    _, run_dir = two_process_run
    steps = [r["step"] for r in _metrics(run_dir)]
    assert steps == [1, 2], f"metrics.jsonl should hold one loss record per optimizer step, found steps {steps}"


def test_two_process_adapter_has_the_single_process_form(two_process_run, one_process_run):
    _, two = two_process_run
    _, one = one_process_run
    assert _listing(two) == _listing(one)
    assert not list(two.glob("checkpoint-*")) and not list(two.glob("pytorch_model_fsdp*"))
    config_two = json.loads((two / "adapter_config.json").read_text())
    config_one = json.loads((one / "adapter_config.json").read_text())
    assert set(config_two["target_modules"]) == set(config_one["target_modules"])
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= set(
        config_two["target_modules"])
    for key in ("peft_type", "task_type", "r", "lora_alpha", "base_model_name_or_path", "modules_to_save"):
        assert config_two[key] == config_one[key], key
    tensors_two, tensors_one = _tensors(two), _tensors(one)
    assert {k: tuple(v.shape) for k, v in tensors_two.items()} == {k: tuple(v.shape) for k, v in tensors_one.items()}
    assert {v.dtype for v in tensors_two.values()} == {v.dtype for v in tensors_one.values()}


def test_two_process_adapter_loads_on_the_base_model(two_process_run, small_model):
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    _, run_dir = two_process_run
    base = AutoModelForCausalLM.from_pretrained(small_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, run_dir)
    loaded = get_peft_model_state_dict(model)
    saved = _tensors(run_dir)
    assert set(loaded) == set(saved)
    for name, tensor in saved.items():
        assert torch.equal(loaded[name].cpu(), tensor), name
    assert any(tensor.abs().max() > 0 for name, tensor in saved.items() if "lora_B" in name), "no update was saved"


# ----------------------------------------------------------------------------------------------------
# (b) two processes with batch 1 train like one process with batch 2


def test_two_processes_match_one_process_with_the_same_global_batch(two_process_run, one_process_run):
    _, two = two_process_run
    _, one = one_process_run
    steps_two, steps_one = _first_per_step(_metrics(two)), _first_per_step(_metrics(one))
    assert sorted(steps_one) == sorted(steps_two) == [1, 2]
    for step in (1, 2):
        a, b = steps_two[step], steps_one[step]
        assert a["num_tokens"] == b["num_tokens"], f"step {step}: the runs saw different tokens"
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), f"step {step}: loss {a['loss']} vs {b['loss']}"
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3), f"step {step}: grad norm"
        assert a["learning_rate"] == pytest.approx(b["learning_rate"])


def test_two_processes_make_the_same_update_as_one_process(two_process_run, one_process_run):
    import torch

    _, two = two_process_run
    _, one = one_process_run
    tensors_two, tensors_one = _tensors(two), _tensors(one)
    outliers = total = 0
    for name, tensor in tensors_one.items():
        if "lora_A" in name:  # the same seeded initialisation, moved by updates of about the learning rate
            assert torch.allclose(tensors_two[name], tensor, rtol=0, atol=1e-6), name
            continue
        # B starts at zero and moves by Adam steps of about the learning rate per element, so a wrong sign or a
        # missing all-reduce shows as differences of ~LEARNING_RATE in most elements. An element whose gradient
        # is as small as Adam's eps (1e-8) takes a step set by the last bits of that gradient, which the order of
        # the all-reduce's additions changes: such elements may differ by less than one learning rate.
        difference = (tensors_two[name] - tensor).abs()
        assert difference.max() < LEARNING_RATE, f"{name}: differs by {difference.max():.3g}"
        outliers += int((difference > LEARNING_RATE / 4).sum())
        total += difference.numel()
    assert outliers <= total // 10_000, f"{outliers} of {total} LoRA B elements differ by over a quarter step"


# ----------------------------------------------------------------------------------------------------
# (b2) FSDP2 on two CPU processes: the sharded path ends in the same adapter as one process


def test_fsdp_shards_the_model_on_two_cpu_processes(fsdp_run):
    result, run_dir = fsdp_run
    output = result.stdout + result.stderr
    assert output.count("FSDP2 on CPU processes (gloo)") == 1, output[-3000:]
    assert "DistributedDataParallel" not in output and "Reducer" not in output  # not DDP in disguise
    assert [r["step"] for r in _metrics(run_dir)] == [1, 2]
    assert not list(run_dir.glob("pytorch_model_fsdp*"))  # the run folder holds a plain PEFT adapter


def test_fsdp_matches_one_process(fsdp_run, one_process_plain_run):
    """The same checks as DDP's against one process, less its control-token row (not trained under FSDP, so the
    reference leaves it out too: its gradient would be in the one-process run's grad_norm)."""
    _, fsdp = fsdp_run
    _, one = one_process_plain_run
    assert _listing(fsdp) == _listing(one)
    steps_fsdp, steps_one = _first_per_step(_metrics(fsdp)), _first_per_step(_metrics(one))
    for step in (1, 2):
        a, b = steps_fsdp[step], steps_one[step]
        assert a["num_tokens"] == b["num_tokens"] and a["loss"] == pytest.approx(b["loss"], rel=1e-4), step
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3), step
    tensors_fsdp, tensors_one = _tensors(fsdp), _tensors(one)
    assert {k: tuple(v.shape) for k, v in tensors_fsdp.items()} == {k: tuple(v.shape) for k, v in tensors_one.items()}
    for name, tensor in tensors_one.items():  # the DDP run's tolerance (see above)
        difference = (tensors_fsdp[name] - tensor).abs()
        assert difference.max() < (1e-6 if "lora_A" in name else LEARNING_RATE), f"{name}: {difference.max():.3g}"
    assert any(t.abs().max() > 0 for n, t in tensors_fsdp.items() if "lora_B" in n), "no update was saved"


# ----------------------------------------------------------------------------------------------------
# (c) the launch configs load and validate the way `accelerate launch` reads them


def _launch(config: str, *flags: str):
    """What `accelerate launch --config_file CONFIG FLAGS script` resolves, without starting anything."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / config), *flags, str(SCRIPT)])
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults


def _set_env(monkeypatch, env: dict) -> None:
    for key, value in env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)


@pytest.mark.parametrize("config", ["cpu_2proc.yaml", "cpu_fsdp_2proc.yaml", "ddp.yaml", "fsdp.yaml",
                                    "deepspeed_zero3.yaml", "multi_node_ddp.yaml"])
def test_config_loads_with_accelerate(config):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    path = CONFIGS / config
    assert path.read_text().startswith("#"), "each config opens with a comment saying what it is for"
    loaded = load_config_from_file(str(path))  # what `accelerate launch` does; unknown keys raise
    assert isinstance(loaded, ClusterConfig)
    args, _ = _launch(config)
    assert args.num_processes == loaded.num_processes


def test_cpu_config_starts_two_processes():
    from accelerate.utils import DistributedType

    args, defaults = _launch("cpu_2proc.yaml")
    # MULTI_GPU makes accelerate start the processes with torchrun; MULTI_CPU would need mpirun
    assert defaults.distributed_type == DistributedType.MULTI_GPU and args.multi_gpu
    assert defaults.use_cpu and args.num_processes == 2 and args.mixed_precision == "no"


def test_ddp_config(monkeypatch):
    from accelerate.utils import DistributedType, prepare_multi_gpu_env

    args, defaults = _launch("ddp.yaml", "--main_process_port", "0")
    assert defaults.distributed_type == DistributedType.MULTI_GPU and args.multi_gpu
    assert defaults.num_processes == 8 and defaults.num_machines == 1 and defaults.mixed_precision == "bf16"
    env = prepare_multi_gpu_env(args)
    assert args.nproc_per_node == "8" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_multi_node_config():
    from accelerate.utils import DistributedType, prepare_multi_gpu_env

    args, defaults = _launch("multi_node_ddp.yaml", "--machine_rank", "1", "--main_process_ip", "192.168.0.7")
    assert defaults.distributed_type == DistributedType.MULTI_GPU
    assert defaults.num_machines == 2 and defaults.num_processes == 16 and defaults.main_process_port
    prepare_multi_gpu_env(args)  # machine 1 does not bind the port, so nothing here needs the network
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "8", 1)
    assert args.rdzv_endpoint == f"192.168.0.7:{defaults.main_process_port}"


def test_fsdp_config(monkeypatch, ft, small_model):
    import torch
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, prepare_multi_gpu_env
    from torch.distributed.fsdp import OffloadPolicy
    from torch.distributed.fsdp.fully_sharded_data_parallel import StateDictType
    from transformers import AutoConfig, AutoModelForCausalLM

    args, defaults = _launch("fsdp.yaml", "--main_process_port", "0")
    assert defaults.distributed_type == DistributedType.FSDP and args.use_fsdp
    assert defaults.num_processes == 8 and defaults.mixed_precision == "bf16"
    _set_env(monkeypatch, prepare_multi_gpu_env(args))  # the environment the training processes get
    plugin = FullyShardedDataParallelPlugin()  # what the Trainer's Accelerator builds from it
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True  # full shard
    assert type(plugin.cpu_offload) is OffloadPolicy  # no parameter offload
    assert plugin.cpu_ram_efficient_loading is True
    # transformers' Trainer.save_model writes the adapter under FSDP only for a full state dict
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    # the Trainer refuses FSDP's activation checkpointing together with the script's own, which is on
    assert ft.CONFIG["GRADIENT_CHECKPOINTING"] is True and plugin.activation_checkpointing is False
    # transformer-layer wrapping resolves the decoder layer class from the model itself
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(small_model))
    plugin.set_auto_wrap_policy(model)
    layer_classes = {cls.__name__ for cls in plugin.auto_wrap_policy.keywords["transformer_layer_cls"]}
    assert layer_classes == {type(model.model.layers[0]).__name__}


def _zero3_plugin(monkeypatch):
    """The DeepSpeed plugin the training processes build from deepspeed_zero3.yaml, checked on the way."""
    from accelerate.utils import DeepSpeedPlugin, DistributedType, prepare_deepspeed_cmd_env

    args, defaults = _launch("deepspeed_zero3.yaml", "--main_process_port", "0")
    assert defaults.distributed_type == DistributedType.DEEPSPEED and args.use_deepspeed
    assert defaults.num_processes == 8 and defaults.mixed_precision == "bf16"
    ds = defaults.deepspeed_config
    assert ds["zero_stage"] == 3 and ds["zero3_save_16bit_model"] is True and ds["zero3_init_flag"] is True
    # left to the script: set here, they would have to match its --gradient_accumulation_steps/--max_grad_norm
    assert not {"gradient_accumulation_steps", "gradient_clipping", "deepspeed_config_file"} & set(ds)
    args.deepspeed_fields_from_accelerate_config = ",".join(ds)  # as launch_command sets it
    _, env = prepare_deepspeed_cmd_env(args)
    _set_env(monkeypatch, env)
    plugin = DeepSpeedPlugin()  # built from the environment, as in the training processes
    config = plugin.deepspeed_config
    assert plugin.zero_stage == 3 and plugin.zero3_init_flag is True
    assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert config["zero_optimization"]["offload_param"]["device"] == "none"
    for key in ("gradient_accumulation_steps", "gradient_clipping", "train_micro_batch_size_per_gpu"):
        assert config[key] == "auto", key
    return plugin


def test_deepspeed_zero3_config(monkeypatch):
    _zero3_plugin(monkeypatch)  # needs no deepspeed package


def test_deepspeed_zero3_config_takes_the_script_settings(monkeypatch):
    pytest.importorskip("deepspeed", reason="the deepspeed package is not installed")
    from types import SimpleNamespace

    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    plugin = _zero3_plugin(monkeypatch)
    plugin.set_mixed_precision("bf16")
    hf_config = HfTrainerDeepSpeedConfig(plugin.deepspeed_config)
    script_args = SimpleNamespace(world_size=8, per_device_train_batch_size=2, gradient_accumulation_steps=8,
                                  max_grad_norm=1.0, learning_rate=2e-4, adam_beta1=0.9, adam_beta2=0.999,
                                  adam_epsilon=1e-8, weight_decay=0.0, save_on_each_node=False, fp16=False,
                                  fp16_full_eval=False, bf16=True, bf16_full_eval=False)
    hf_config.trainer_config_process(script_args)
    assert hf_config.mismatches == []
    assert hf_config.config["gradient_accumulation_steps"] == 8 and hf_config.config["train_batch_size"] == 128
