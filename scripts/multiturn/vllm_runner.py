"""Greedy replies from vLLM's own chat API, run by serving.vllm_check in vLLM's virtualenv (.venv-vllm: vLLM pins
an older transformers than training), so this file imports nothing of the package.

    .venv-vllm/bin/python scripts/multiturn/vllm_runner.py REQUEST.json RESULT.json

REQUEST: {"model": merged folder, "prompts": [[messages]...], "max_new_tokens": n}. RESULT, per prompt: the prompt's
token ids as vLLM rendered and tokenized them, the reply's ids, and whether vLLM stopped (finish_reason "stop",
at an eos id of the folder's generation_config.json) rather than at the length limit."""

import json
import os
import sys


def main(request_path: str, result_path: str) -> None:
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    from vllm import LLM, SamplingParams

    request = json.loads(open(request_path, encoding="utf-8").read())
    # The KV cache's size is set, not left to gpu_memory_utilization: on the CPU that is a share of host memory
    # from which the worker's own resident memory is taken, and a float32 model of a few hundred MB already used
    # all of a 0.2 share on a 24 GB machine ("requested memory for kv -0.49 GiB"). 1 GiB holds a 2,048-token
    # sequence of models up to about 8B parameters in float32.
    llm = LLM(model=request["model"], dtype="float32", max_model_len=2048, seed=0, enforce_eager=True,
              kv_cache_memory_bytes=request.get("kv_cache_bytes", 1 << 30))
    params = SamplingParams(temperature=0.0, max_tokens=request["max_new_tokens"], skip_special_tokens=False)
    outputs = llm.chat(request["prompts"], params, use_tqdm=False)
    rows = [{"prompt_ids": list(out.prompt_token_ids), "reply": list(out.outputs[0].token_ids),
             "stopped": out.outputs[0].finish_reason == "stop"} for out in outputs]
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump({"rows": rows}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
