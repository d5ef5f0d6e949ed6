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
    # on the CPU "gpu_memory_utilization" is the share of host memory vLLM reserves (weights and KV cache)
    llm = LLM(model=request["model"], dtype="float32", max_model_len=2048, seed=0, enforce_eager=True,
              gpu_memory_utilization=request.get("memory_share", 0.2))
    params = SamplingParams(temperature=0.0, max_tokens=request["max_new_tokens"], skip_special_tokens=False)
    outputs = llm.chat(request["prompts"], params, use_tqdm=False)
    rows = [{"prompt_ids": list(out.prompt_token_ids), "reply": list(out.outputs[0].token_ids),
             "stopped": out.outputs[0].finish_reason == "stop"} for out in outputs]
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump({"rows": rows}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
