"""The real run's data stages at scale, on this machine: plan -> prepare -> filter -> tokenize under a budget that
takes part of a large source laid out exactly like FineWeb-2 on the Hub.

    python bench/scale_rehearsal.py --docs 2000000 --base models/base --name scale-rehearsal

1. Writes (once, into .cache/rehearsal/) a FineWeb-2 `tur_Latn` copy in the Hub's layout and schema
   (bench/hub_layout.py): --docs documents of bench/filter_throughput.py's labelled corpus (Turkish, its
   neighbours and other languages, duplicates), files of 40,000 rows in row groups of 1,000.
2. Copies the repository into a fresh git project there, with params that read that folder as the only source
   and a budget that buys a share of it, and `--base` (a converted checkpoint, e.g. the demo's models/base) as
   the model, so tokenize uses a real Gemma tokenizer.
3. Runs each stage with `dvc repro --single-item`, timing it and sampling the resident memory of all its
   processes; then measures the workspace and the DVC cache on disk, a no-op `dvc repro tokenize`, and which stages a
   `-S train.lora_r=32` makes stale.
Result: bench/results/<name>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.record import save  # noqa: E402

WORK = ROOT / ".cache" / "rehearsal"
STAGES = ("check", "plan", "prepare@fineweb2", "filter", "base_model", "tokenize")


def corpus_folder(docs: int) -> Path:
    from bench.filter_throughput import documents
    from bench.hub_layout import write_fineweb2

    folder = WORK / f"fineweb-2-{docs}"
    if (folder / "README.md").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    texts = (text for _, text in documents(docs, seed=7))
    write_fineweb2(folder, texts, rows_per_file=40_000, rows_per_group=1_000)
    return folder


def tree_bytes(path: Path) -> int:
    """Bytes on disk, each hardlinked file once (the DVC cache and the workspace share them)."""
    seen, total = set(), 0
    for file in path.rglob("*"):
        if file.is_file() and not file.is_symlink():
            stat = file.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


def rss_of_tree(pid: int) -> int:
    """Resident bytes of a process and all its descendants now."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(status.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total


ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
       "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}


def timed(command: list[str], cwd: Path) -> dict:
    """Wall time and the peak resident memory of the command's process tree (sampled every 0.2 s)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample():
        while process.poll() is None:
            peak[0] = max(peak[0], rss_of_tree(process.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{output[-4000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(peak[0] / 2**20), "output_tail": output[-600:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2_000_000)
    parser.add_argument("--base", type=Path, required=True, help="a converted checkpoint (the demo's models/base)")
    parser.add_argument("--gpu-hours", type=float, default=94, help="the budget: ~500k of 2M documents")
    parser.add_argument("--name", default="scale-rehearsal")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from tests.conftest import copy_repository
    from tools.experiment import apply

    started = time.perf_counter()
    folder = corpus_folder(args.docs)
    corpus_seconds = time.perf_counter() - started
    project = WORK / "project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    copy_repository(project)
    overlay = {
        "model": {"id": str(args.base.resolve()), "gguf_package": None},
        "budget": {"gpu_hours": args.gpu_hours},
        "data": {"sources": {"fineweb2": {
            "dataset": {"path": str(folder), "config": "tur_Latn", "split": "train", "format": "text"},
            "weight": 1, "tokens_per_row": 900, "survival": 0.7, "rows": args.docs}}},
        "evaluate": {"lm_eval_tasks": []},
    }
    apply(overlay, project / "params.yaml")
    stages = {stage: timed(["dvc", "repro", "--single-item", stage], project) for stage in STAGES}
    plan = json.loads((project / "reports/plan.json").read_text())
    prepared = json.loads((project / "reports/prepare/fineweb2.json").read_text())
    filtered = json.loads((project / "reports/filter.json").read_text())
    tokens = json.loads((project / "reports/tokens.json").read_text())
    rows = {"prepare@fineweb2": prepared["read"], "filter": filtered["sources"]["fineweb2"]["read"],
            "tokenize": sum(s["_total"]["rows"] for s in tokens["splits"].values())}
    for stage, count in rows.items():
        stages[stage]["documents"] = count
        stages[stage]["documents_per_second"] = round(count / stages[stage]["seconds"])
    noop = timed(["dvc", "repro", STAGES[-1]], project)  # everything up to tokenize, already done
    apply({"train": {"lora_r": 32}}, project / "params.yaml")
    stale = json.loads(subprocess.run(["dvc", "status", "--json"], cwd=project, capture_output=True, text=True,
                                      env=ENV, check=True).stdout or "{}")
    result = {
        "machine": f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), this development machine",
        "python": platform.python_version(),
        "corpus": {"documents": args.docs, "files": len(list(folder.rglob("*.parquet"))),
                   "bytes": tree_bytes(folder), "seconds_to_write": round(corpus_seconds, 1) if corpus_seconds > 1
                   else "written by an earlier run"},
        "plan": {key: plan[key] for key in ("budget_gpu_hours", "train_tokens_planned", "gpu_hours")}
        | {"rows_to_read": plan["sources"]["fineweb2"]["rows_to_read"]},
        "stages": {stage: {k: v for k, v in figures.items() if k != "output_tail"} for stage, figures in stages.items()},
        "kept": filtered["totals"], "train_tokens": tokens["splits"]["train"]["_total"]["tokens"],
        "disk": {"workspace_data_bytes": tree_bytes(project / "data"), "dvc_cache_bytes": tree_bytes(project / ".dvc/cache"),
                 "workspace_and_cache_bytes": tree_bytes(project)},
        "noop_repro_seconds": noop["seconds"],
        "stale_after_train.lora_r=32": sorted(stale),
    }
    print(json.dumps(result, indent=2))
    save(args.name, result)


if __name__ == "__main__":
    main()
