"""The layer analysis as a figure: per-layer linearity, removal cost and cosine, the recommended set shaded."""

import math
from pathlib import Path

from ..io_utils import atomic_save_figure
from .analysis_result import LayerAnalysis


def plot_analysis(analysis: LayerAnalysis, path: str | Path, k: int | None = None) -> Path:
    """Write a PNG with the per-layer numbers (the recommended set for `k` shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = analysis.attention_rows
    layers = [row.layer for row in rows]
    figure, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    panels = [
        ([row.r2 for row in rows], "held-out R$^2$\n(linear fit of attention)", "tab:blue"),
        (
            [math.nan if row.removal_cost is None else row.removal_cost for row in rows],
            "loss increase when\nthis attention is dropped",
            "tab:red",
        ),
        ([row.cosine for row in rows], "cos(block input, output)", "tab:green"),
    ]
    highlighted = analysis.recommend(k).layers if k else []
    for axis, (values, label, color) in zip(axes, panels):
        axis.plot(layers, values, marker="o", color=color)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        for layer in highlighted:
            axis.axvspan(layer - 0.5, layer + 0.5, color="0.85", zorder=0)
    axes[1].set_yscale("symlog", linthresh=0.01)
    axes[-1].set_xlabel("layer" + (f" (shaded: recommended set for K={k})" if k else ""))
    figure.suptitle(f"{analysis.model}: per-layer attention analysis (context {analysis.settings['context_length']})")
    figure.tight_layout()
    return atomic_save_figure(figure, path, dpi=110)
