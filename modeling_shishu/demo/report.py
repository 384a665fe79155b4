"""The demo's closing table: parent against ShishuLM on every figure the demo measured."""

import json
from pathlib import Path

from ..evaluation.tables import retained_rows
from .pipeline import VARIANT


def _score(results: dict, label: str, task: str, metric: str | None = None):
    """A model's headline score on a task, or one of the task's other metrics (e.g. "word_perplexity,none")."""
    for model in results["models"]:
        if model["label"] == label:
            score = model["scores"].get(task) or {}
            return score.get("metrics", {}).get(metric) if metric else score.get("value")
    return None


def _greedy_lines(fidelity: dict) -> list[str]:
    """Both models' greedy answers to the fixed chat prompts, one block per prompt."""
    lines = []
    for row in fidelity["greedy"]:
        lines += [
            f"prompt: {row['prompt']}",
            f"  parent  : {' '.join(row['parent'].split())}",
            f"  ShishuLM: {' '.join(row['model'].split())}",
        ]
    return lines + ([""] if lines else [])


def final_table(out: Path, release: Path) -> str:
    """Parent vs ShishuLM on every figure the demo measured."""
    results = json.loads((out / "eval" / "results.json").read_text())
    before = json.loads((out / "eval-converted" / "results.json").read_text())
    bench = json.loads((out / "bench.json").read_text())
    conversion = json.loads((out / "converted" / "conversion.json").read_text())
    models = bench["models"]
    shishu_role = "shishu"
    fidelity = json.loads((out / "fidelity" / "fidelity.json").read_text())
    rows = [("figure", "SmolLM2-135M parent", VARIANT, "ratio / change")]

    def add(name, parent_value, shishu_value, relation="", digits=4):
        def fmt(v):
            return f"{v:,.{digits}f}" if isinstance(v, float) else (f"{v:,}" if v is not None else "-")

        rows.append((name, fmt(parent_value), fmt(shishu_value), relation))

    # first what the conversion keeps of the parent: the headline tasks and their mean, with paired SEs
    for row in retained_rows(results):
        name = row["label"] if row["task"] is None else f"{row['label']} ({row['metric']}, n={row['n']})"
        relation = f"retained {100 * row['retained']:.1f}%"
        if row["retained_stderr"] is not None:
            relation += f" ± {100 * row['retained_stderr']:.1f}"
        add(name, row["baseline"], row["model"], relation)
    m = fidelity["measures"]
    chat = f"held-out chat, {m['conversations']} conversations, assistant turns"
    add(
        f"{chat}: bits/byte",
        m["parent_bits_per_byte"],
        m["model_bits_per_byte"],
        f"retained {100 * m['retained']:.1f}% ± {100 * (m['retained_stderr'] or 0):.1f}",
    )
    add(f"{chat}: KL(parent || model) nats/token", None, m["kl_per_token"], f"± {m['kl_per_token_stderr'] or 0:.4f}")
    add(
        f"{chat}: top-1 agreement with parent",
        None,
        m["top1_agreement"],
        f"± {m['top1_agreement_stderr'] or 0:.4f}",
    )
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
    rows.append(("layers converted", "", ", ".join(map(str, conversion.get("mlp_layers", []))), ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines += [
        "",
        "retained: ShishuLM's score / the parent's on the same documents (bits/byte: parent / ShishuLM) ± its paired "
        "standard error; the headline tasks are those the parent scores >= 4 standard errors above chance; every "
        "task's scores, differences and z above chance are in the evaluation summary",
        "",
        *_greedy_lines(fidelity),
        "",
        f"release folder : {release}",
        f"evaluation     : {out / 'eval' / 'results.json'} (summary.md: every task)",
        f"chat fidelity  : {out / 'fidelity' / 'fidelity.json'}",
        f"llama.cpp GGUF : {out / f'{VARIANT}.gguf'}",
        f"benchmark      : {out / 'bench.json'}",
        f"layer analysis : {out / 'analysis'}",
        f"healing run    : {out / 'heal'}",
        f"stage logs     : {out / 'logs'}",
    ]
    return "\n".join(lines)
