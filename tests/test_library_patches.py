"""The replacements of TRL internals (scripts/multiturn/library_patches.py): each fails here, loudly, when the TRL
installed is not the one it was written against, instead of silently training slower or differently."""

import importlib

import pytest
import trl

from multiturn import library_patches


def test_written_for_the_installed_trl():
    assert trl.__version__ == library_patches.TRL_VERSION, (
        f"TRL {trl.__version__} is installed; multiturn/library_patches.py was written for "
        f"{library_patches.TRL_VERSION}: check each entry of REPLACED against the new sources, then update it")


def test_every_replaced_internal_is_there_with_its_signature():
    assert library_patches.changed_internals() == []


@pytest.mark.parametrize("module_name, name, signature", library_patches.REPLACED)
def test_a_changed_internal_is_reported(monkeypatch, module_name, name, signature):
    module = importlib.import_module(module_name)
    monkeypatch.delattr(module, name)
    assert f"{module_name}.{name} is gone" in library_patches.changed_internals()
    if signature is not None:
        monkeypatch.setattr(module, name, lambda device, extra: False, raising=False)
        assert any(c.startswith(f"{module_name}.{name} is now (device, extra)")
                   for c in library_patches.changed_internals())


def test_a_changed_internal_switches_its_replacement_off_with_one_warning(monkeypatch):
    import trl.trainer.utils as trl_utils

    before = trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE
    monkeypatch.setattr(trl_utils, "_use_triton", lambda device, extra=None: False)
    monkeypatch.setattr(library_patches, "_warned", set())
    lines = []
    library_patches.lean_cpu_lm_head(lines.append)
    library_patches.lean_cpu_lm_head(lines.append)
    assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == before, "patched although TRL changed"
    assert len(lines) == 1 and lines[0].startswith("WARNING: the lean CPU LM head is off")
    assert "trl.trainer.utils._use_triton is now (device, extra=None)" in lines[0]


def test_fsdp_on_cpu_written_for_the_installed_accelerate():
    import inspect

    import accelerate
    from accelerate.state import AcceleratorState

    assert accelerate.__version__ == library_patches.ACCELERATE_VERSION, (
        f"accelerate {accelerate.__version__} is installed; fsdp_on_cpu was written for "
        f"{library_patches.ACCELERATE_VERSION}: check whether AcceleratorState still keeps MULTI_CPU under FSDP")
    assert "fsdp_plugin" in inspect.signature(AcceleratorState.__init__).parameters


def test_fsdp_on_cpu_is_off_with_one_warning_for_another_accelerate(monkeypatch):
    import accelerate
    from accelerate.state import AcceleratorState

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setattr(accelerate, "__version__", "9.9.9")
    before = AcceleratorState.__init__
    lines = []
    assert library_patches.fsdp_on_cpu(lines.append) is False
    assert AcceleratorState.__init__ is before
    assert len(lines) == 1 and "FSDP on the CPU is off" in lines[0] and "trains as DDP" in lines[0]
