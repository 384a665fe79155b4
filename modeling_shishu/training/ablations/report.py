"""The study's report: per-arm means over seeds, the markdown table (kept between markers in a hand-written
page), the two-panel plot."""

import os
import statistics
from pathlib import Path

from ...io_utils import atomic_write_text
from ...sizes import layout_string
from .study import Study


RESULTS_START = "<!-- results:start (written by recipes/ablations/run_study.py) -->"
RESULTS_END = "<!-- results:end -->"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(study: Study, runs: dict) -> list[dict]:
    """Per-arm means and spreads over seeds (architecture numbers are identical across seeds)."""
    rows = []
    for arm in study.arms:
        per_seed = runs[arm.name]
        first = per_seed[0]
        bpb = [r["held_out"]["bits_per_byte"] for r in per_seed]
        loss = [r["held_out"]["loss"] for r in per_seed]
        rows.append(
            {
                "arm": arm.name,
                "label": arm.label,
                "layout": layout_string(first["layer_types"]),
                "share_groups": first["mlp_share_groups"],
                "unique_parameters": first["unique_parameters"],
                "non_embedding_parameters": first["non_embedding_parameters"],
                "train_flops_per_token": first["train_flops_per_token"],
                "kv_bytes_per_token": first["kv_bytes_per_token"],
                "kv_dtype": first["kv_dtype"],
                "held_out_loss_mean": _mean_std(loss)[0],
                "held_out_loss_std": _mean_std(loss)[1],
                "bits_per_byte_mean": _mean_std(bpb)[0],
                "bits_per_byte_std": _mean_std(bpb)[1],
                "bits_per_byte_per_seed": bpb,
                "train_tokens": first["train_tokens"],
                "train_tokens_per_second_mean": statistics.fmean(r["train_tokens_per_second"] for r in per_seed),
                "decode_ms_per_token_median": statistics.median(r["decode_ms_per_token"] for r in per_seed),
            }
        )
    base = rows[0]
    for row in rows:
        row["parameters_vs_parent"] = row["unique_parameters"] / base["unique_parameters"]
        row["kv_vs_parent"] = row["kv_bytes_per_token"] / base["kv_bytes_per_token"]
        row["bits_per_byte_delta_vs_parent"] = row["bits_per_byte_mean"] - base["bits_per_byte_mean"]
        row["bits_per_byte_relative_vs_parent"] = row["bits_per_byte_mean"] / base["bits_per_byte_mean"] - 1
        # Paired by seed: same init seed, same data order, only the layout differs.
        paired = [b - p for b, p in zip(row["bits_per_byte_per_seed"], base["bits_per_byte_per_seed"])]
        row["bits_per_byte_paired_delta_std"] = _mean_std(paired)[1]
    return rows


def markdown_table(rows: list[dict], seeds: list[int]) -> str:
    header = (
        "| arm | layout (A: attention, M: MLP-only) | unique params | vs parent | KV bytes/token | train GFLOP/token "
        f"| held-out loss | bits/byte (mean ± sd, {len(seeds)} seeds) | Δ bits/byte vs parent (± paired sd) | train tokens/s "
        "| decode ms/token |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    lines = []
    for row in rows:
        shared = (
            f" (shared {', '.join('+'.join(map(str, g)) for g in row['share_groups'])})" if row["share_groups"] else ""
        )
        delta = (
            "—"
            if row is rows[0]
            else (
                f"{row['bits_per_byte_delta_vs_parent']:+.4f} ± {row['bits_per_byte_paired_delta_std']:.4f} "
                f"({100 * row['bits_per_byte_relative_vs_parent']:+.1f}%)"
            )
        )
        lines.append(
            f"| {row['label']} | {row['layout']}{shared} | {row['unique_parameters'] / 1e6:.3f}M | "
            f"{100 * row['parameters_vs_parent']:.1f}% | {row['kv_bytes_per_token']:,.0f} ({row['kv_dtype']}) | "
            f"{row['train_flops_per_token'] / 1e9:.4f} | {row['held_out_loss_mean']:.4f} | "
            f"{row['bits_per_byte_mean']:.4f} ± {row['bits_per_byte_std']:.4f} | {delta} | "
            f"{row['train_tokens_per_second_mean']:,.0f} | {row['decode_ms_per_token_median']:.2f} |"
        )
    return header + "\n".join(lines) + "\n"


def plot_results(rows: list[dict], runs: dict, out_path: Path) -> None:
    """Left: held-out bits/byte against unique parameters (error bars: sd over seeds). Right: training
    loss against tokens, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, row in enumerate(rows):
        color = f"C{index}"
        left.errorbar(
            row["unique_parameters"] / 1e6,
            row["bits_per_byte_mean"],
            yerr=row["bits_per_byte_std"],
            fmt="o",
            color=color,
            capsize=4,
            label=row["label"],
        )
        curves = [r["loss_curve"] for r in runs[row["arm"]]]
        length = min(len(c) for c in curves)
        if length:
            tokens = [curves[0][i][0] / 1e3 for i in range(length)]
            mean = [statistics.fmean(c[i][1] for c in curves) for i in range(length)]
            right.plot(tokens, mean, color=color, linewidth=1.2, label=row["label"])
    left.set_xlabel("unique parameters (M)")
    left.set_ylabel("held-out bits per byte (lower is better)")
    left.set_title("Held-out bits/byte vs parameters")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.set_xlabel("training tokens (thousands)")
    right.set_ylabel("training loss (nats/token)")
    right.set_title("Training loss, mean over seeds")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    tail = [
        statistics.fmean(r["loss_curve"][-1][1] for r in runs[row["arm"]])
        for row in rows
        if runs[row["arm"]][0]["loss_curve"]
    ]
    if tail:  # zoom on the part of the curves where the arms separate
        right.set_ylim(min(tail) - 0.3, min(tail) + 2.0)
    figure.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}.png")
    try:
        figure.savefig(tmp, dpi=90)
        os.replace(tmp, out_path)
    finally:
        plt.close(figure)
        if tmp.exists():
            tmp.unlink()


def write_markdown_block(path: Path, block: str) -> None:
    """Put `block` between the results markers of `path` (created with just the block if missing), so the
    hand-written conclusions around it survive a re-run."""
    marked = f"{RESULTS_START}\n{block.rstrip()}\n{RESULTS_END}\n"
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if RESULTS_START in text and RESULTS_END in text:
            before, rest = text.split(RESULTS_START, 1)
            after = rest.split(RESULTS_END, 1)[1].lstrip("\n")
            atomic_write_text(path, before + marked + after)
            return
        atomic_write_text(path, text.rstrip() + "\n\n" + marked)
        return
    atomic_write_text(path, "# ShishuLM small-scale replication study\n\n" + marked)


def results_block(rows: list[dict], study: Study, settings: dict) -> str:
    r = rows[0]
    return (
        f"Setting: {settings['describe']}\n\n"
        + markdown_table(rows, study.seeds)
        + f"\nBits per byte over {r['held_out_tokens']:,} held-out tokens ({r['held_out_bytes']:,} bytes of the "
        f"Shakespeare validation works); KV bytes per token read from a real cache after a {study.decode_context}-token "
        f"prefill; decode latency is the median ms for one token at context {study.decode_context}, batch 1 "
        f"(tokens/s and latency: {settings['device']}, {settings['torch_threads']} torch threads; noisy on a shared "
        f"machine). Plot: `ablations.png`; raw numbers: `ablations.json`.\n"
    )
