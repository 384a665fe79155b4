"""A card's scores: which evaluated model a folder is, the `model-index` entries, the `.eval_results` files
(only scores that may be filed under an official benchmark id) and the rows of the card's evaluation table."""

from pathlib import Path

from ..evaluation.results import reported_tasks


METRIC_NAMES = {
    "acc": "accuracy",
    "acc_norm": "accuracy, length-normalised",
    "exact_match": "exact match",
    "bits_per_byte": "bits per byte",
}


def select_model(results: dict, folder: Path, weights_sha256: dict, label: str | None = None) -> dict:
    """The results entry whose recorded weights are the folder's weights (or the one named `label`)."""
    models = results["models"]
    if label is not None:
        matches = [model for model in models if model["label"] == label]
        if not matches:
            raise ValueError(
                f"the results file has no model labelled {label!r} (it has {', '.join(m['label'] for m in models)})"
            )
        return matches[0]
    for model in models:
        if recorded_weights(model) and recorded_weights(model) == weights_sha256:
            return model
    evaluated = "; ".join(f"{m['label']} ({m.get('pretrained')})" for m in models)
    raise ValueError(
        f"the results file holds no scores for the weights in {folder} (their sha256 match none of the evaluated "
        f"models: {evaluated}); evaluate this folder, or pass --name for a model evaluated from the Hub"
    )


def recorded_weights(model: dict) -> dict[str, str]:
    """The sha256 of the safetensors files `shishu eval` recorded for a model."""
    files = model.get("files") or {}
    return {name: entry["sha256"] for name, entry in files.items() if name.endswith(".safetensors")}


def official_benchmark(record: dict, score: dict) -> dict | None:
    """The Hub benchmark dataset a score may be filed under, or None. The Hub aggregates scores filed under a
    benchmark's id into leaderboards, so only a run of the whole benchmark qualifies: a task whose protocol
    differs from the standard one carries no `hub_dataset`, and a `--limit` run is filed under the task name."""
    hub = record.get("hub_dataset")
    return hub if hub and score["n_samples"] == score["n_samples_total"] else None


def task_identity(task: str, record: dict, score: dict) -> tuple[str, str]:
    """(dataset id, config) naming a task in `model-index`: the Hub benchmark dataset for a full run, else the task."""
    hub = official_benchmark(record, score) or {}
    return hub.get("id") or task, hub.get("task_id") or task


def metric_label(record: dict) -> str:
    """`acc (accuracy)`: lm-eval's metric name, what it measures, and its filter when it has one."""
    metric = record["metric"]
    label = f"{metric} ({METRIC_NAMES[metric]})" if metric in METRIC_NAMES else metric
    if record.get("filter") not in (None, "none"):
        label += f", {record['filter']}"
    return label


def examples_scored(score: dict) -> str:
    """`250 of 1935` for a `--limit` run, else the number of examples."""
    if score["n_samples"] != score["n_samples_total"]:
        return f"{score['n_samples']} of {score['n_samples_total']}"
    return str(score["n_samples"])


def is_limited(results: dict, model: dict) -> bool:
    """Whether some task was scored on a subset of its examples (`--limit`)."""
    return any(model["scores"][t]["n_samples"] != model["scores"][t]["n_samples_total"] for t in results["tasks"])


def build_eval_results(results: dict, model: dict) -> list:
    """`model-index` entries (huggingface_hub `EvalResult`), one per task: the dataset name states the shots,
    the metric type is lm-eval's metric name (acc / acc_norm / exact_match / bits_per_byte)."""
    from huggingface_hub import EvalResult

    entries, seen = [], {}
    for task in reported_tasks(results, model):
        record = results["tasks"][task]
        score = model["scores"][task]
        identity = task_identity(task, record, score)
        if identity in seen:
            raise ValueError(f"tasks {seen[identity]} and {task} map to the same model-index dataset {identity}")
        seen[identity] = task
        shots = record["num_fewshot"]
        entries.append(
            EvalResult(
                task_type="text-generation",
                task_name="Text Generation",
                dataset_type=identity[0],
                dataset_name=f"{record['pretty_name']} ({shots}-shot)",
                dataset_config=identity[1],
                dataset_split=(record.get("dataset") or {}).get("split") or "test",
                dataset_args={"num_few_shot": shots},
                metric_type=record["metric"],
                metric_name=metric_label(record),
                metric_value=score["value"],
            )
        )
    return entries


def build_eval_result_entries(results: dict, model: dict) -> dict[str, list]:
    """The `.eval_results/<task>.yaml` entries (huggingface_hub `EvalResultEntry`) of the tasks run in full on a
    Hub benchmark (`official_benchmark`); the notes state the harness, shots, metric and the examples scored.
    Everything else is in the card's table and `eval_results.json` only."""
    from huggingface_hub import EvalResultEntry

    files = {}
    for task in reported_tasks(results, model):
        record = results["tasks"][task]
        score = model["scores"][task]
        hub = official_benchmark(record, score)
        if not hub:
            continue
        notes = (
            f"lm-eval {results['environment']['lm_eval']} task {task}, {record['num_fewshot']}-shot, "
            f"{metric_label(record)}, {examples_scored(score)} examples"
        )
        if (record.get("dataset") or {}).get("path") == "json":
            notes += "; offline copy of the data (see the model card)"
        files[task] = [
            EvalResultEntry(
                dataset_id=hub["id"], task_id=hub["task_id"], value=score["value"], date=results["date"], notes=notes
            )
        ]
    return files


def value_with_stderr(score: dict) -> str:
    value = f"{score['value']:.4f}"
    return value if score.get("stderr") is None else f"{value} ± {score['stderr']:.4f}"


def _table_row(record: dict, name: str, shots: int, examples: str, score: dict, key: str) -> dict:
    arrow = {True: " ↑", False: " ↓"}.get(record.get("higher_is_better"), "")
    metric = metric_label(record) + arrow
    return {
        "task": name,
        "metric": metric,
        "shots": shots,
        "examples": examples,
        "value": value_with_stderr(score),
        "key": key,
    }


def evaluation_rows(results: dict, model: dict, baseline: dict | None) -> list[dict]:
    """The card's evaluation table: one row per reported task (`reported_tasks`), then one per suite mean; with a baseline, its scores, the
    difference and the difference's paired standard error."""
    rows = []
    for task in reported_tasks(results, model):
        record = results["tasks"][task]
        score = model["scores"][task]
        rows.append(
            _table_row(record, record["pretty_name"], record["num_fewshot"], examples_scored(score), score, task)
        )
    reported = set(reported_tasks(results, model))
    for mean_id, mean in (model.get("means") or {}).items():
        if not set(mean["tasks"]) <= reported:
            continue
        record = results["tasks"][mean["tasks"][0]]
        examples = str(sum(model["scores"][task]["n_samples"] for task in mean["tasks"]))
        rows.append(_table_row(record, mean["name"], record["num_fewshot"], examples, mean, mean_id))
    if baseline is not None:
        comparison = results.get("comparison") or {}
        paired = {row["task"]: row for row in comparison.get("rows", [])} | {
            row["id"]: row for row in comparison.get("means", [])
        }
        for row in rows:
            other = baseline["scores"].get(row["key"]) or baseline["means"][row["key"]]
            mine = model["scores"].get(row["key"]) or model["means"][row["key"]]
            stderr = (paired.get(row["key"]) or {}).get("paired_stderr")
            retained = (paired.get(row["key"]) or {}).get("retained")
            retained_se = (paired.get(row["key"]) or {}).get("retained_stderr")
            row["retained"] = "n/a" if retained is None else f"{100 * retained:.1f}%"
            row["retained_se"] = "n/a" if retained_se is None else f"{100 * retained_se:.1f}%"
            row["baseline"] = value_with_stderr(other)
            row["difference"] = f"{mine['value'] - other['value']:+.4f}"
            row["paired_se"] = "n/a" if stderr is None else f"{stderr:.4f}"
    return rows


def unreported_tasks(results: dict, model: dict) -> list[dict]:
    """The tasks scored but not reported, each `{task, baseline_z}` (the z of the model's parent, or its own)."""
    reported = set(reported_tasks(results, model))
    rows = {row["task"]: row for row in (results.get("comparison") or {}).get("rows", [])}
    left = []
    for task in results["tasks"]:
        if task in reported:
            continue
        z = rows[task]["baseline_z"] if task in rows else model["scores"][task].get("z_above_chance")
        left.append({"task": task, "z": "n/a" if z is None else f"{z:.1f}"})
    return left


__all__ = [
    "build_eval_result_entries",
    "build_eval_results",
    "evaluation_rows",
    "is_limited",
    "metric_label",
    "official_benchmark",
    "select_model",
    "task_identity",
    "unreported_tasks",
]
