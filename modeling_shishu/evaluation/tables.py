"""The Markdown tables `shishu eval` prints and writes to summary.md, from a results.json's contents."""


def _format(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _with_stderr(score: dict) -> str:
    if score["stderr"] is None:  # lm-eval reports no stderr for corpus-level metrics such as bits_per_byte
        return _format(score["value"])
    return f"{_format(score['value'])} ± {_format(score['stderr'])}"


def _mean_n(model: dict, mean: dict) -> int:
    return sum(model["scores"][task]["n_samples"] for task in mean["tasks"])


def _metric_cell(metric: str, filter_name: str, higher_is_better: bool | None) -> str:
    """`exact_match (strict-match) ↑`: the metric, its filter unless "none", and which direction is better."""
    arrow = {True: " ↑", False: " ↓"}.get(higher_is_better, "")
    return metric + ("" if filter_name == "none" else f" ({filter_name})") + arrow


def _single_table(tasks: dict, models: list[dict]) -> list[str]:
    lines = [
        "| model | task | metric | n-shot | n | value | stderr |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for model in models:
        for task, record in tasks.items():
            score = model["scores"][task]
            metric = _metric_cell(record["metric"], record["filter"], record["higher_is_better"])
            lines.append(
                f"| {model['label']} | {task} | {metric} | {record['num_fewshot']} | {score['n_samples']} | "
                f"{_format(score['value'])} | {_format(score['stderr'])} |"
            )
        for mean in (model.get("means") or {}).values():
            shots = tasks[mean["tasks"][0]]["num_fewshot"]
            lines.append(
                f"| {model['label']} | {mean['name']} | {mean['metric']} | {shots} | {_mean_n(model, mean)} | "
                f"{_format(mean['value'])} | {_format(mean['stderr'])} |"
            )
    return lines


def _comparison_table(tasks: dict, models: list[dict], comparison: dict) -> list[str]:
    by_label = {model["label"]: model for model in models}
    model, baseline = by_label[comparison["model"]], by_label[comparison["baseline"]]
    lines = [
        f"| task | metric | n-shot | n | {model['label']} | {baseline['label']} | difference | paired SE | chance | "
        f"{baseline['label']} z above chance |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in comparison["rows"]:
        record = tasks[row["task"]]
        a, b = model["scores"][row["task"]], baseline["scores"][row["task"]]
        metric = _metric_cell(record["metric"], record["filter"], record["higher_is_better"])
        difference = "" if row["difference"] is None else f"{row['difference']:+.4f}"
        lines.append(
            f"| {row['task']} | {metric} | {record['num_fewshot']} | {a['n_samples']} | "
            f"{_with_stderr(a)} | {_with_stderr(b)} | {difference} | {_format(row.get('paired_stderr'))} | "
            f"{_format(row.get('chance'), 3)} | {_format(row.get('baseline_z'), 1)} |"
        )
    for row in comparison.get("means", []):
        a, b = model["means"][row["id"]], baseline["means"][row["id"]]
        metric = _metric_cell(row["metric"], "none", row["higher_is_better"])
        lines.append(
            f"| {row['name']} | {metric} | {tasks[row['tasks'][0]]['num_fewshot']} | {_mean_n(model, a)} | "
            f"{_with_stderr(a)} | {_with_stderr(b)} | {row['difference']:+.4f} | {_format(row['paired_stderr'])} | | |"
        )
    return lines


def _percent(value, digits: int = 1) -> str:
    return "" if value is None else f"{100 * value:.{digits}f}%"


def retained_rows(results: dict) -> list[dict]:
    """The "% of the parent retained" rows of a comparison: the headline tasks (those the baseline scores at least
    `HEADLINE_MIN_Z` standard errors above chance), their mean, then the bits-per-byte tasks. Each row: `label`,
    `metric`, `n`, `baseline`, `model`, `retained`, `retained_stderr`; the card, the demo and `shishu eval` print
    these rows."""
    comparison = results.get("comparison")
    if not comparison or "retained" not in comparison:
        return []
    by_label = {model["label"]: model for model in results["models"]}
    model = by_label[comparison["model"]]
    rows = []
    for row in comparison["rows"]:
        if not row["headline"] and not (row["metric"] == "bits_per_byte" and row.get("retained") is not None):
            continue
        record = results["tasks"][row["task"]]
        rows.append(
            {
                "label": record.get("pretty_name") or row["task"],
                "task": row["task"],
                "metric": _metric_cell(record["metric"], record["filter"], record["higher_is_better"]),
                "n": model["scores"][row["task"]]["n_samples"],
                "baseline": row["baseline"],
                "model": row["model"],
                "retained": row["retained"],
                "retained_stderr": row["retained_stderr"],
                "headline": row["headline"],
            }
        )
    summary = comparison["retained"]
    if summary["tasks"]:
        headline = [row for row in rows if row["headline"]]
        rows.insert(
            len(headline),
            {
                "label": f"mean of the {len(headline)} headline tasks",
                "task": None,
                "metric": "",
                "n": sum(row["n"] for row in headline),
                "baseline": None,
                "model": None,
                "retained": summary["mean"],
                "retained_stderr": summary["stderr"],
                "headline": True,
            },
        )
    return rows


def retained_table(results: dict) -> str:
    """`retained_rows` as a Markdown table (empty when the results compare no two models)."""
    rows = retained_rows(results)
    if not rows:
        return ""
    comparison = results["comparison"]
    lines = [
        f"| task | metric | n | {comparison['baseline']} | {comparison['model']} | retained | paired SE |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        label = f"**{row['label']}**" if row["task"] is None else row["label"]
        retained = f"**{_percent(row['retained'])}**" if row["task"] is None else _percent(row["retained"])
        lines.append(
            f"| {label} | {row['metric']} | {row['n']} | {_format(row['baseline'])} | {_format(row['model'])} | "
            f"{retained} | {_percent(row['retained_stderr'])} |"
        )
    return "\n".join(lines)


def summary_table(results: dict) -> str:
    """A Markdown table: one row per task (and per model), or both models side by side with the difference and
    its paired standard error; the suite's means follow the tasks."""
    if "comparison" not in results:
        return "\n".join(_single_table(results["tasks"], results["models"]))
    detail = "\n".join(_comparison_table(results["tasks"], results["models"], results["comparison"]))
    retained = retained_table(results)
    return f"{retained}\n\n{detail}" if retained else detail


def settings_line(results: dict) -> str:
    """The run in one line: suite, limits, batch size, dtype, devices, scorer, lm-eval version, wall time."""
    settings = results["settings"]
    limits = f"limit {settings['limit']}" if settings["limit"] is not None else "no limit"
    if settings["task_limits"]:
        limits += " (" + ", ".join(f"{task}={n}" for task, n in settings["task_limits"].items()) + ")"
    return (
        f"suite {results['suite']['name']}, {limits}, batch size {settings['batch_size']}, dtype "
        f"{', '.join(sorted({m['dtype'] for m in results['models']}))}, device {settings['device']} x "
        f"{settings['num_processes']} process(es), scorer {settings.get('scorer', 'lm-eval')}, "
        f"lm-eval {results['environment']['lm_eval']}, "
        f"wall time {results['wall_seconds']:.0f} s"
    )
