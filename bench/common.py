"""What the benchmarks share: the script imported as a module, the machine's name, library versions, the memory of
a process tree."""

import importlib
import importlib.metadata
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "multi_turn_finetuning.py"
RESULTS = ROOT / "bench" / "results"


def load_script(path: Path = SCRIPT):
    """The fine-tuning script as a module, its folder first on the path so that its package (multiturn/) imports
    too: the benchmarks call the project's own functions, not copies of them."""
    sys.path.insert(0, str(Path(path).resolve().parent))
    return importlib.import_module(Path(path).stem)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(text: str) -> str:
    """A file-name-safe form of a device name: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "unknown"


def versions(packages: tuple[str, ...]) -> dict:
    """Python's version and each package's installed version (None where it is not installed)."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_results(record: dict, out: str, name: str) -> str:
    """Write a benchmark's record as JSON to `out`, or to bench/results/<name>-<cpu>-<date>.json; print the path."""
    import json

    path = Path(out) if out else RESULTS / f"{name}-{slug(cpu_name())}-{record['date']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")
    return str(path)


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """(anonymous, resident) memory of these processes together, in KiB, each page shared by k processes counted
    1/k in each (proportional set size): forked workers share their parent's pages until they write them."""
    anon = rss = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss_Anon:"):
                    anon += int(line.split()[1])
                elif line.startswith("Pss:"):
                    rss += int(line.split()[1])
        except OSError:
            pass
    return anon, rss
