"""Training metrics: peak FLOP/s for MFU, the metrics JSONL and the loss-curve PNG (FLOPs per token come from
`modeling_shishu.sizes`).

`metrics.jsonl` holds one JSON object per line, each with a `step`; training lines carry `loss`, `lr`,
`tokens_per_second`, `train_seconds` (optimizer-step time so far; and `mfu` on a GPU), evaluation lines carry `eval_loss`. On resume, lines past the
checkpoint's step are dropped, so the file always reads as one uninterrupted run.
"""

import json
import math
import os
from pathlib import Path

from ..io_utils import atomic_save_figure, atomic_write_text


# Dense bf16 peak FLOP/s per device (vendor datasheets, no sparsity). Matched by substring of
# `torch.cuda.get_device_name()`, most specific first; `peak_flops_per_device` in the recipe overrides.
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("A6000", 155e12),
    ("MI300X", 1307e12),
    ("MI250X", 383e12),
)


def peak_flops(device_name: str | None) -> float | None:
    if not device_name:
        return None
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def detect_peak_flops(override: float | None = None) -> float | None:
    """Peak FLOP/s of one device: the override, the GPU's datasheet value, or None (CPU, unknown GPU)."""
    if override:
        return float(override)
    import torch

    if torch.cuda.is_available():
        return peak_flops(torch.cuda.get_device_name())
    return None


class MetricsLogger:
    """Appends metric records to `<run>/metrics.jsonl` and redraws `<run>/loss_curve.png`."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.plot_path = Path(run_dir) / "loss_curve.png"
        self.enabled = enabled

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {key: _json_number(value) for key, value in record.items()}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def records(self) -> list[dict]:
        return read_metrics(self.path)

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a run resumes from) and any torn line."""
        if not self.enabled or not self.path.exists():
            return
        kept = [json.dumps(record) + "\n" for record in self.records() if record.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(kept))

    def plot(self, title: str = "") -> None:
        if self.enabled:
            plot_loss_curve(self.records(), self.plot_path, title=title)


def _json_number(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Records of a metrics JSONL; a torn last line (a kill mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_loss_curve(records: list[dict], out_path: str | os.PathLike, title: str = "") -> None:
    """Training loss (and held-out loss, when present) against step, written atomically as a PNG."""
    # The object API with the Agg canvas: no pyplot (slow to import, global state, needs no display).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    held_out = [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None]
    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    if train:
        axis.plot(*zip(*train), label="train loss", linewidth=1.2)
    if held_out:
        axis.plot(*zip(*held_out), "o-", label="held-out loss", linewidth=1.2, markersize=3)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if train or held_out:
        axis.legend()
    figure.tight_layout()
    atomic_save_figure(figure, out_path, dpi=110)
