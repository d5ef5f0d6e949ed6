"""The run's settings: the script's constants, overridden by --name=value and --config=FILE.json, checked before
anything is loaded; --help lists them."""

import ast
import json
import re
from pathlib import Path

from .errors import UserError


EITHER_AUTO_OR_BOOL = ("PADDING_FREE", "TRAIN_CONTROL_TOKENS")  # "auto", True or False
SOURCES = ("DATA_PATH", "EVAL_DATA_PATH")  # a path, or a list of sources (sources.parse_sources)


def parse_overrides(argv: list[str], defaults: dict) -> dict:
    """Apply the arguments, in order, to a copy of the defaults, refusing unknown names and wrong types.

    --name=value sets one constant; --config=FILE.json sets every constant the file's JSON object names (a
    run's training_config.json repeats that run, configs/quick_start.json is the README's first run)."""
    config = dict(defaults)
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise UserError(f"argument {arg!r} is not of the form --name=value (for example --max_steps=100)")
        name, raw = arg[2:].split("=", 1)
        if name == "config":
            for key, value in read_config_file(raw).items():
                set_value(config, defaults, key, value, json.dumps(value), f" in {raw}")
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare string, e.g. --model_name=google/gemma-2-9b-it
        set_value(config, defaults, name, value, raw)
    check_config(config)
    return config


def read_config_file(path: str) -> dict:
    try:
        settings = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"--config={path}: cannot read it ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise UserError(f"--config={path}: not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(settings, dict):
        raise UserError(f"--config={path}: expected a JSON object of settings, e.g. {{\"max_steps\": 100}}")
    return settings


def set_value(config: dict, defaults: dict, name: str, value, raw: str, where: str = "") -> None:
    key, label = name.upper(), f"{name!r}{where}" if where else f"--{name}"
    if key not in defaults:
        close = [k.lower() for k in defaults if k.lower().startswith(name[:4].lower())]
        hint = f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""
        raise UserError(f"unknown setting {label}{hint}; the settings are the constants at the top of the script")
    default = defaults[key]
    if isinstance(default, float) and type(value) is int:
        value = float(value)
    if key in EITHER_AUTO_OR_BOOL and value in ("True", "False"):
        value = value == "True"
    elif isinstance(default, str) and not isinstance(value, str) and key not in EITHER_AUTO_OR_BOOL and not (
            key in SOURCES and isinstance(value, list)):
        value = raw  # e.g. --run_name=2024 stays a string where a string is expected
    expected = (str, bool) if key in EITHER_AUTO_OR_BOOL else (str, list) if key in SOURCES else (type(default),)
    if type(value) not in expected:
        shown = f"{name!r}: {raw}{where}" if where else f"--{name}={raw}"
        raise UserError(f"{shown}: expected {type(default).__name__} like {default!r}, got {type(value).__name__}")
    config[key] = value


def check_config(c: dict) -> None:
    """Catch impossible settings before anything is loaded."""
    choices = {
        "TRAIN_ON": ("all", "last"),
        "LONG_CONVERSATIONS": ("split", "truncate"),
        "OVERLONG_EXCHANGE": ("truncate", "drop"),
        "ATTN_IMPLEMENTATION": ("auto", "flash_attention_2", "flex_attention", "sdpa", "eager"),
        "PADDING_FREE": ("auto", True, False),
        "PRECISION": ("auto", "bf16", "fp32"),
        "TRAIN_CONTROL_TOKENS": ("auto", True, False),
        "NON_TEXT_CONVERSATIONS": ("error", "leave_out"),
        "UNRENDERABLE_CONVERSATIONS": ("error", "leave_out"),
    }
    for key, allowed in choices.items():
        if c[key] not in allowed:
            raise UserError(f"{key.lower()}={c[key]!r} is not one of {', '.join(map(repr, allowed))}")
    positive = ("MAX_SEQ_LENGTH", "BATCH_SIZE", "GRADIENT_ACCUMULATION_STEPS", "LORA_R", "LOGGING_STEPS", "REPLY_MAX_TOKENS")
    for key in positive:
        if c[key] <= 0:
            raise UserError(f"{key.lower()} must be positive, got {c[key]}")
    if not 0.0 <= c["EVAL_FRACTION"] < 1.0:
        raise UserError(f"eval_fraction must be in [0, 1), got {c['EVAL_FRACTION']}")
    if c["LEARNING_RATE"] <= 0:
        raise UserError(f"learning_rate must be positive, got {c['LEARNING_RATE']}")
    if c["MAX_STEPS"] <= 0 and c["NUM_TRAIN_EPOCHS"] <= 0:
        raise UserError("set num_train_epochs > 0 or max_steps > 0")
    from .sources import parse_sources

    parse_sources(c["DATA_PATH"], "DATA_PATH")
    if c["EVAL_DATA_PATH"] not in ("", []):
        parse_sources(c["EVAL_DATA_PATH"], "EVAL_DATA_PATH")
    roles = ("user", "assistant", "system", "tool", None)
    if not all(isinstance(k, str) and v in roles for k, v in c["ROLE_MAP"].items()):
        raise UserError(f"role_map must map the data's role names to 'user', 'assistant', 'system', 'tool' or None, "
                        f"e.g. {{'bing': 'assistant', 'bard': None}}; got {c['ROLE_MAP']!r}")
    if not all(isinstance(k, str) for k in c["CHAT_TEMPLATE_KWARGS"]):
        raise UserError(f"chat_template_kwargs must map names to values, e.g. {{'enable_thinking': False}}; "
                        f"got {c['CHAT_TEMPLATE_KWARGS']!r}")


def help_text(script: str, defaults: dict) -> str:
    """--help: every setting with its default and comment, grouped as in the script's constants block (`script` is
    the script's source: its comments are the documentation)."""
    block = script.split("# " + "-" * 100 + "\n")[1]  # the block between the two ruler lines
    out = [script.split('"""')[1].strip(), "", "settings (--name=value; --config=FILE.json sets several):"]
    for line in block.splitlines():
        if re.fullmatch(r"# [a-z][a-z ]*", line):  # a group: "# data", "# model", ...
            out.append(f"\n{line[2:]}")
            continue
        name, _, rest = line.partition(" = ")
        if name.isupper() and name in defaults:
            comment = rest.split("  # ", 1)[1] if "  # " in rest else ""
            out.append(f"  --{name.lower()}={defaults[name]!r}" + (f"\n      {comment}" if comment else ""))
        elif line.startswith("#  ") and "\n      " in out[-1]:  # a comment carried on to the next line
            out[-1] += " " + line.lstrip("# ").strip()
    return "\n".join(out)
