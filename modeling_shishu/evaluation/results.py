"""results.json, the file `shishu eval` writes: building it from lm-eval's results, comparing a model with its
baseline, and reading it back with every field checked (format "shishu-eval-results", described in
`evaluation/data/README.md`)."""

import datetime
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

from ..io_utils import read_json_file, sha256_file
from .harness import EvalSettings, ModelRun
from .models import describe_checkpoint
from .offline_tasks import materialize_offline_tasks
from .statistics import mean_and_stderr, mean_of_tasks, paired_ratio, z_above
from .suites import Suite, SuiteTask, display_path


RESULTS_FORMAT = "shishu-eval-results"
RESULTS_FORMAT_VERSION = 1


def _number(value):
    """lm-eval writes "N/A" for a missing stderr; keep numbers as floats and anything else as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


# corpus-level metrics whose per-document values are lm-eval's (log-likelihood, bytes) pairs
_PER_BYTE_METRICS = ("bits_per_byte", "byte_perplexity")


def document_scores(samples: list[dict] | None, entry: SuiteTask) -> dict | None:
    """Per-document values of a task's per-document metrics (acc, acc_norm, exact_match, ...), from lm-eval's
    logged samples under the headline filter, ordered by doc_id: `{"doc_id": [...], "acc": [...], ...}`. For
    bits per byte, the per-document natural-log likelihood and byte count (`loglikelihood`, `bytes`), from which
    the corpus-level value is computed. None when samples were not logged and for groups."""
    rows = sorted((s for s in samples or [] if s.get("filter", "none") == entry.filter), key=lambda s: s["doc_id"])
    if not rows:
        return None
    if entry.metric in _PER_BYTE_METRICS:
        pairs = [row.get(entry.metric) for row in rows]
        if not all(isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in pairs):
            return None
        return {
            "doc_id": [row["doc_id"] for row in rows],
            "loglikelihood": [float(pair[0]) for pair in pairs],
            "bytes": [int(pair[1]) for pair in pairs],
        }
    metrics = [m for m in rows[0].get("metrics", []) if all(_number(row.get(m)) is not None for row in rows)]
    if entry.metric not in metrics:
        return None
    return {
        "doc_id": [row["doc_id"] for row in rows],
        **{m: [float(row[m]) for row in rows] for m in metrics},
        # the number of choices and the gold choice's text, for the chance level of multiple-choice tasks
        "choices": [len(row.get("arguments") or ()) for row in rows],
        "gold": [_gold_choice(row.get("target"), row.get("arguments")) for row in rows],
    }


def _gold_choice(target, arguments) -> str | None:
    """The text of the gold choice, from lm-eval's logged target (the gold index, as an int or its digits, or the
    choice's own text, e.g. an answer letter) and the logged requests (context, continuation) of every choice. None
    where the choices share one continuation after different contexts (WinoGrande)."""
    requests = list(arguments.values()) if isinstance(arguments, dict) else list(arguments or ())
    continuations = [
        (request.get("arg_1") if isinstance(request, dict) else request[1]) if len(request) > 1 else None
        for request in requests
    ]
    if not all(isinstance(text, str) for text in continuations) or len(set(continuations)) != len(continuations):
        return None
    if isinstance(target, str) and target.strip().isdigit():
        target = int(target)
    if isinstance(target, int) and not isinstance(target, bool):
        return continuations[target].strip() if 0 <= target < len(continuations) else None
    if isinstance(target, str):
        matches = [text for text in continuations if text.strip() == target.strip()]
        return matches[0].strip() if len(matches) == 1 else None
    return None


def chance_level(output_type: str | None, documents: dict | None) -> float | None:
    """The score of guessing on the documents scored. Multiple choice (acc and acc_norm alike): the better of a
    uniform guess (1 / choices, averaged) and always giving the same answer, the most frequent gold choice text
    (BoolQ's "yes" is right 62% of the time; where the choices are a question's own texts, this is rare). 0 for a
    single continuation or a generated answer; None for log-likelihood metrics such as bits per byte."""
    if output_type == "multiple_choice":
        if not documents or not documents.get("choices") or min(documents["choices"]) < 1:
            return None
        uniform = math.fsum(1 / count for count in documents["choices"]) / len(documents["choices"])
        gold = [answer for answer in documents.get("gold") or () if answer is not None]
        if len(gold) != len(documents["choices"]):
            return uniform
        return max(uniform, max(gold.count(answer) for answer in set(gold)) / len(gold))
    if output_type in ("loglikelihood", "generate_until"):
        return 0.0
    return None


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
        documents = document_scores((samples or {}).get(entry.task), entry)
        config = results["configs"].get(entry.task) or {}
        value = _number(row[entry.result_key])
        stderr = _number(row.get(f"{entry.metric}_stderr,{entry.filter}"))
        chance = chance_level(config.get("output_type"), documents)
        scores[entry.task] = {
            "metric": entry.metric,
            "filter": entry.filter,
            "value": value,
            "stderr": stderr,
            # guessing's score on the same documents, and how many standard errors above it this score lies
            "chance": chance,
            "z_above_chance": None if chance is None or value is None else z_above(value, chance, stderr),
            "num_fewshot": results["n-shot"].get(entry.task),
            "n_samples": sum(n_samples.get(leaf, {}).get("effective", 0) for leaf in leaves),
            "n_samples_total": sum(n_samples.get(leaf, {}).get("original", 0) for leaf in leaves),
            "metrics": {key: _number(value) for key, value in row.items() if "," in key},
            "documents": documents,
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


def _model_record(run: ModelRun, suite: Suite, raw_files: dict) -> dict:
    """One model's provenance, lm-eval's view of it, its files and its scores."""
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
    return model


def _settings_record(settings: EvalSettings, first: ModelRun) -> dict:
    return {
        "batch_size": settings.batch_size,
        "device": first.lm_args["device"],
        "dtype": settings.dtype,
        "limit": settings.limit,
        "task_limits": settings.task_limits,
        "num_processes": first.num_processes,
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
            for key, value in first.lm_args.items()
            if key not in ("pretrained", "revision", "batch_size", "device")
        },
        "scorer": settings.scorer,
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE"),
    }


def build_results(
    runs: list[ModelRun],
    suite: Suite,
    settings: EvalSettings,
    command: str,
    started: datetime.datetime,
    wall_seconds: float,
    raw_files: dict,
) -> dict:
    """Our results file: settings, versions, task definitions and per-model scores, comparison included.
    `command` repeats the run; `raw_files` maps each label to lm-eval's own files (relative paths)."""
    manifest = None
    if suite.task_templates is not None:
        folder = materialize_offline_tasks(suite.task_templates)
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    models = [_model_record(run, suite, raw_files) for run in runs]
    results = {
        "format": RESULTS_FORMAT,
        "format_version": RESULTS_FORMAT_VERSION,
        "suite": {
            "name": suite.name,
            "description": suite.description,
            "file": display_path(suite.path),
            "sha256": sha256_file(suite.path),
        },
        "date": started.isoformat(timespec="seconds"),
        "wall_seconds": round(wall_seconds, 1),
        "command": command,
        "argv": list(sys.argv),
        "environment": _versions(),
        "settings": _settings_record(settings, runs[0]),
        "tasks": {entry.task: _task_record(entry, runs[0].results, manifest) for entry in suite.tasks},
        "models": models,
    }
    if len(models) == 2:
        results["comparison"] = compare(results)
    return results


# A task is in the headline when the baseline (the parent) scores at least this many standard errors above chance
# on the documents used: nearer to chance, what a model keeps of the parent's score is noise.
HEADLINE_MIN_Z = 4.0


def _paired_documents(model: dict, baseline: dict, field: str) -> tuple[list, list]:
    """The two models' per-document `field` over the same documents, in doc_id order."""
    pairs = []
    for record in (model, baseline):
        if len(set(record["doc_id"])) != len(record["doc_id"]) or len(record["doc_id"]) != len(record[field]):
            raise ValueError(f"per-document {field} records need one value per distinct doc_id")
        pairs.append(dict(zip(record["doc_id"], record[field])))
    if pairs[0].keys() != pairs[1].keys():
        raise ValueError("the two models were scored on different documents; a paired comparison needs the same ones")
    docs = sorted(pairs[0])
    return [pairs[0][doc] for doc in docs], [pairs[1][doc] for doc in docs]


def paired_comparison(model: dict, baseline: dict, record: dict) -> dict:
    """Model against baseline on one task's per-document values: the difference of the headline metric and its
    paired standard error, and the share of the baseline's score the model retains (model / baseline for a score,
    baseline / model for bits per byte, which is lower-better) with its paired standard error."""
    metric = record["metric"]
    if metric in _PER_BYTE_METRICS:
        a, b = _paired_documents(model, baseline, "loglikelihood")
        size, _ = _paired_documents(model, baseline, "bytes")
        # bits per byte is a ratio of sums: -sum(loglikelihood) / (ln 2 * sum(bytes)); so is its difference
        difference, stderr = paired_ratio([(y - x) / math.log(2) for x, y in zip(a, b)], size)
        retained, retained_stderr = paired_ratio([-y for y in b], [-x for x in a])
        if metric != "bits_per_byte":  # byte perplexity: no difference of exponentials is reported
            difference = stderr = None
    else:
        a, b = _paired_documents(model, baseline, metric)
        difference, stderr = mean_and_stderr([x - y for x, y in zip(a, b)])
        retained = retained_stderr = None
        if record.get("higher_is_better") and math.fsum(b) > 0:
            retained, retained_stderr = paired_ratio(a, b)
    return {
        "n": len(a),
        "difference": difference,
        "stderr": stderr,
        "retained": retained,
        "retained_stderr": retained_stderr,
    }


def reported_tasks(results: dict, model: dict) -> list[str]:
    """The tasks a card reports for `model` (its table, `model-index` and `.eval_results`): the bits-per-byte
    tasks, and the tasks a model can be told apart on. With a comparison in which `model` is the model, those are
    the headline tasks (the baseline, its parent, at least `HEADLINE_MIN_Z` standard errors above chance); otherwise
    the tasks `model` itself scores that far above chance. A score at chance measures nothing."""
    comparison = results.get("comparison")
    if comparison and comparison.get("model") == model["label"] and "retained" in comparison:
        rows = {row["task"]: row for row in comparison["rows"]}
        return [task for task in results["tasks"] if rows[task]["headline"] or rows[task]["chance"] is None]
    reported = []
    for task in results["tasks"]:
        score = model["scores"][task]
        z = score.get("z_above_chance")
        if score.get("chance") is None or (z is not None and z >= HEADLINE_MIN_Z):
            reported.append(task)
    return reported


def compare(results: dict) -> dict:
    """Model against baseline on every task's headline metric and on every suite mean. Where both models have
    per-document values: the paired standard error of the difference, the share of the baseline's score retained
    with its paired standard error, and the headline (the tasks the baseline scores at least `HEADLINE_MIN_Z`
    standard errors above chance) with the mean share retained over them."""
    model = next(m for m in results["models"] if m["role"] == "model")
    baseline = next(m for m in results["models"] if m["role"] == "baseline")
    rows = []
    for task, record in results["tasks"].items():
        a, b = model["scores"][task], baseline["scores"][task]
        paired = {"n": None, "stderr": None, "retained": None, "retained_stderr": None}
        if a.get("documents") and b.get("documents"):
            paired = paired_comparison(a["documents"], b["documents"], record)
        baseline_z = b.get("z_above_chance")
        rows.append(
            {
                "task": task,
                "metric": record["metric"],
                "model": a["value"],
                "baseline": b["value"],
                "difference": None if a["value"] is None or b["value"] is None else a["value"] - b["value"],
                "paired_n": paired["n"],
                "paired_stderr": paired["stderr"],
                "retained": paired["retained"],
                "retained_stderr": paired["retained_stderr"],
                "chance": b.get("chance"),
                "baseline_z": baseline_z,
                "headline": baseline_z is not None and baseline_z >= HEADLINE_MIN_Z and paired["retained"] is not None,
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
    headline = [row for row in rows if row["headline"]]
    retained = {"min_z": HEADLINE_MIN_Z, "tasks": [row["task"] for row in headline], "mean": None, "stderr": None}
    if headline:
        retained["mean"], retained["stderr"] = mean_of_tasks([(r["retained"], r["retained_stderr"]) for r in headline])
    return {
        "model": model["label"],
        "baseline": baseline["label"],
        "rows": rows,
        "means": means,
        "retained": retained,
    }


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
    data = read_json_file(path, "results file")
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
                    f"{where}: model {model.get('label')!r}, {task}: metric {score.get('metric')!r} != task metric "
                    f"{record.get('metric')!r}"
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
    if score["metric"] in _PER_BYTE_METRICS:
        _check_byte_documents(score, documents, where)
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


def _check_byte_documents(score: dict, documents: dict, where: str) -> None:
    """Per-document log-likelihoods and byte counts must give the reported bits per byte."""
    fields = [
        documents.get(key) if isinstance(documents, dict) else None for key in ("doc_id", "loglikelihood", "bytes")
    ]
    if not all(isinstance(field, list) for field in fields) or len({len(field) for field in fields}) != 1:
        raise ValueError(
            f"{where}: per-document records need equally long 'doc_id', 'loglikelihood' and 'bytes' lists"
        )
    if len(fields[0]) != score.get("n_samples") or sum(fields[2]) <= 0:
        raise ValueError(f"{where}: per-document records hold {len(fields[0])} documents for {score.get('n_samples')}")
    if score["metric"] == "bits_per_byte":
        value = -math.fsum(fields[1]) / (math.log(2) * sum(fields[2]))
        if abs(value - score["value"]) > 1e-6 * max(1.0, abs(value)):
            raise ValueError(
                f"{where}: per-document records give {value} bits per byte, not the reported {score['value']}"
            )


def _check_comparison(data: dict, where: str) -> None:
    """Each paired standard error must be the one the per-document values give."""
    models = {model["label"]: model for model in data["models"]}
    comparison = data["comparison"]
    if comparison.get("model") not in models or comparison.get("baseline") not in models:
        raise ValueError(f"{where}: the comparison names models that are not in the file")
    model, baseline = models[comparison["model"]], models[comparison["baseline"]]
    for row in comparison.get("rows", []):
        a, b = model["scores"][row["task"]].get("documents"), baseline["scores"][row["task"]].get("documents")
        expected = paired_comparison(a, b, data["tasks"][row["task"]])["stderr"] if a and b else None
        recorded = row.get("paired_stderr")
        if (expected is None) != (recorded is None) or (expected is not None and abs(expected - recorded) > 1e-9):
            raise ValueError(
                f"{where}: comparison {row['task']}: paired stderr {recorded!r}, the per-document values give "
                f"{expected!r}"
            )
