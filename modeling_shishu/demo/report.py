"""The demo's closing table: parent against ShishuLM on every figure the demo measured."""

import json
from pathlib import Path

from .pipeline import VARIANT


def _score(results: dict, label: str, task: str, metric: str | None = None):
    """A model's headline score on a task, or one of the task's other metrics (e.g. "word_perplexity,none")."""
    for model in results["models"]:
        if model["label"] == label:
            score = model["scores"].get(task) or {}
            return score.get("metrics", {}).get(metric) if metric else score.get("value")
    return None


def _with_stderr(score: dict) -> str:
    return f"{score['value']:.4f}" + ("" if score["stderr"] is None else f" ± {score['stderr']:.4f}")


def evaluation_rows(results: dict, parent: str, shishu_label: str, skip: list[str]) -> list[tuple]:
    """Task scores (then the suite's means) with their standard errors, and ShishuLM minus parent on the same
    documents with the paired standard error and whether the difference exceeds two of them."""
    from ..evaluation.statistics import is_significant

    models = {model["label"]: model for model in results["models"]}
    comparison = results.get("comparison") or {}
    paired = {row["task"]: row for row in comparison.get("rows", [])} | {
        row["id"]: row for row in comparison.get("means", [])
    }
    rows = []
    for key in [task for task in results["tasks"] if task not in skip] + [
        mean["id"] for mean in comparison.get("means", [])
    ]:
        p, s = (models[label]["scores"].get(key) or models[label]["means"][key] for label in (parent, shishu_label))
        if key in results["tasks"]:
            name, record, n = key, results["tasks"][key], s["n_samples"]
        else:
            name, record = s["name"], results["tasks"][s["tasks"][0]]
            n = sum(models[shishu_label]["scores"][task]["n_samples"] for task in s["tasks"])
        change = f"{s['value'] - p['value']:+.4f}"
        stderr = (paired.get(key) or {}).get("paired_stderr")
        if stderr is not None:
            change += f" (paired SE {stderr:.4f}, significant: {'yes' if is_significant(s['value'] - p['value'], stderr) else 'no'})"
        rows.append(
            (
                f"{name} ({record['metric']}, {record.get('num_fewshot', 0)}-shot, n={n})",
                _with_stderr(p),
                _with_stderr(s),
                change,
            )
        )
    return rows


def final_table(out: Path, release: Path) -> str:
    """Parent vs ShishuLM on every figure the demo measured."""
    results = json.loads((out / "eval" / "results.json").read_text())
    before = json.loads((out / "eval-converted" / "results.json").read_text())
    bench = json.loads((out / "bench.json").read_text())
    conversion = json.loads((out / "converted" / "conversion.json").read_text())
    models = bench["models"]
    shishu_role = "shishu"
    rows = [("figure", "SmolLM2-135M parent", VARIANT, "ratio / change")]

    def add(name, parent_value, shishu_value, relation="", digits=4):
        def fmt(v):
            return f"{v:,.{digits}f}" if isinstance(v, float) else (f"{v:,}" if v is not None else "-")

        rows.append((name, fmt(parent_value), fmt(shishu_value), relation))

    p_params, s_params = models["baseline"]["unique_parameters"], models[shishu_role]["unique_parameters"]
    add("unique parameters", p_params, s_params, f"{s_params / p_params - 1:+.2%}")
    p_kv, s_kv = models["baseline"]["kv_cache_bytes_per_token"], models[shishu_role]["kv_cache_bytes_per_token"]
    add(
        f"KV cache bytes / token ({models[shishu_role]['dtype']}, measured)",
        int(p_kv),
        int(s_kv),
        f"{s_kv / p_kv - 1:+.2%}",
    )
    for figure, label in [("prefill_ms", "prefill latency ratio"), ("decode_ms_per_token", "decode latency ratio")]:
        for row in bench["ratios"]:
            if row["figure"] == figure and row.get("mode") == "eager":
                rows.append((f"{label} (ctx {row['context']}, batch {row['batch']})", "", "", f"x{row['ratio']:.2f}"))
    held_out = {"offline_shakespeare": "Shakespeare", "offline_sharegpt": "ShareGPT"}
    fitted = next(m["label"] for m in before["models"] if m["role"] == "model")
    data_free = next(m["label"] for m in before["models"] if m["role"] == "baseline")
    for task, corpus in held_out.items():
        for metric, name in [(None, "bits/byte"), ("word_perplexity,none", "word perplexity")]:
            parent_value, healed_value = (
                _score(results, "smollm2-135m", task, metric),
                _score(results, VARIANT, task, metric),
            )
            add(f"held-out {corpus} {name}: parent", parent_value, None)
            add("  ... converted, data-free (not healed)", None, _score(before, data_free, task, metric))
            add("  ... converted and fitted (not healed)", None, _score(before, fitted, task, metric))
            add(
                "  ... fitted and healed",
                None,
                healed_value,
                "" if None in (parent_value, healed_value) else f"{healed_value / parent_value - 1:+.1%}",
            )
    rows += evaluation_rows(results, "smollm2-135m", VARIANT, skip=list(held_out))
    rows.append(("layers converted", "", ", ".join(map(str, conversion.get("mlp_layers", []))), ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines += [
        "",
        "scores: value ± standard error; change: ShishuLM minus parent on the same documents, significant when it "
        "exceeds 2 paired standard errors",
        "",
        f"release folder : {release}",
        f"evaluation     : {out / 'eval' / 'results.json'}",
        f"llama.cpp GGUF : {out / f'{VARIANT}.gguf'}",
        f"benchmark      : {out / 'bench.json'}",
        f"layer analysis : {out / 'analysis'}",
        f"healing run    : {out / 'heal'}",
        f"stage logs     : {out / 'logs'}",
    ]
    return "\n".join(lines)
