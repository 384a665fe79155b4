"""The report as a figure: decode latency vs context (with the bandwidth limits) and the ShishuLM speed-ups."""

import os

from ..io_utils import atomic_save_figure
from .models import ALL_ATTENTION, BASELINE, SHISHU
from .settings import MODES


COLORS = {BASELINE: "tab:blue", SHISHU: "tab:orange", ALL_ATTENTION: "tab:gray"}
STYLES = {"eager": "-", "compile": "--"}


def plot_report(report: dict, path: str | os.PathLike) -> None:
    """Decode latency vs context for both models in every mode (with their bandwidth limits), and the
    baseline / ShishuLM ratio; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = min(r["batch"] for r in report["inference"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in MODES:
        for role in (BASELINE, SHISHU):
            _plot_latency(left, report, role, mode, batch)
        _plot_ratios(right, report, mode, batch)
    for limit_figure, color, label in (
        ("bytes_read_per_step", "black", "limit: bytes read per step"),
        ("prefill_flops", "tab:purple", "limit: prefill FLOPs"),
    ):
        limit = _by_context(report["ratios"], limit_figure, "eager", batch)
        if limit:
            right.plot([r["context"] for r in limit], [r["ratio"] for r in limit], ":", color=color, label=label)
    right.axhline(1.0, color="gray", linewidth=0.8)
    left.set(
        xlabel="context (tokens)",
        ylabel="decode latency (ms / token)",
        title=f"Decode latency, batch {batch}, {report['settings']['dtype']}",
    )
    right.set(xlabel="context (tokens)", ylabel="baseline / ShishuLM", title="Speed-up of ShishuLM")
    contexts = sorted({r["context"] for r in report["inference"]})
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(contexts, [str(c) for c in contexts])
        axis.minorticks_off()
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    atomic_save_figure(figure, path, dpi=120)


def _by_context(rows: list[dict], figure: str, mode: str, batch: int) -> list[dict]:
    selected = (r for r in rows if r["figure"] == figure and r["mode"] == mode and r["batch"] == batch)
    return sorted(selected, key=lambda r: r["context"])


def _plot_latency(axis, report: dict, role: str, mode: str, batch: int) -> None:
    rows = sorted(
        (r for r in report["inference"] if r["model"] == role and r["mode"] == mode and r["batch"] == batch),
        key=lambda r: r["context"],
    )
    if not rows:
        return
    label, color = report["models"][role]["label"], COLORS[role]
    contexts = [r["context"] for r in rows]
    decode = [r["decode_per_token"] for r in rows]
    axis.plot(
        contexts, [d["median_ms"] for d in decode], STYLES[mode], marker="o", color=color, label=f"{label} ({mode})"
    )
    axis.fill_between(contexts, [d["p10_ms"] for d in decode], [d["p90_ms"] for d in decode], color=color, alpha=0.15)
    if mode == "eager":
        limits = [1e3 * batch / r["bandwidth_limit_tokens_per_s"] for r in rows]
        axis.plot(contexts, limits, ":", color=color, label=f"{label} bandwidth limit")


def _plot_ratios(axis, report: dict, mode: str, batch: int) -> None:
    for rows, marker, color, label in (
        (_by_context(report["ratios"], "decode_ms_per_token", mode, batch), "o", "tab:green", "decode"),
        (_by_context(report["ratios"], "prefill_ms", mode, batch), "s", "tab:purple", "prefill"),
        (
            _by_context(report.get("architecture", []), "decode_ms_per_token", mode, batch),
            ".",
            "tab:gray",
            "decode, same code",
        ),
    ):
        if rows:
            axis.plot(
                [r["context"] for r in rows],
                [r["ratio"] for r in rows],
                STYLES[mode],
                marker=marker,
                color=color,
                label=f"{label} ({mode})",
            )
