"""`run_benchmark`: load the models, measure everything in one process, and assemble the report."""

import dataclasses
import logging
import time

import torch

from .comparison import compare
from .inductor import compile_decode_steps, compile_settings, raised_recompile_limits
from .inference import count_inference_ops, measure_inference, measure_matmul_floor
from .machine import describe_machine
from .models import ALL_ATTENTION, BASELINE, SHISHU, BenchModel, load_models
from .profiling import start_kernel_tracing
from .roofline import add_bandwidth_figures, measure_memory_bandwidth
from .settings import BenchSettings
from .targets import evaluate_targets
from .training import measure_training


logger = logging.getLogger(__name__)


def run_benchmark(
    model: str | None, baseline: str, settings: BenchSettings, log=None, targets: dict | None = None
) -> dict:
    """Load both models, measure everything, return the report (docs/performance.md, "How `shishu bench`
    measures"). `model` is None when the ShishuLM is derived from the baseline's config (`settings.mlp_layers`,
    random weights). With `targets` (`targets.load_targets`), the report's `targets` hold the verdicts."""
    log = log or (lambda message: logger.info(message))
    settings.check()
    if (model is None) == (settings.mlp_layers is None):
        raise ValueError("give either --model or --mlp-layers (with --random-init), not both")
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    started = time.time()
    models, twin_difference = load_models(model, baseline, settings, log)
    check_positions(models, settings)

    bandwidth = measure_bandwidth(settings)
    log(f"memory bandwidth (copy, read + write): {bandwidth / 1e9:.1f} GB/s")
    aten_ops = count_inference_ops(models, settings)
    log(
        "aten ops per prefill / decode step: "
        + "; ".join(f"{m.label} {aten_ops[m.role]['prefill']} / {aten_ops[m.role]['decode_step']}" for m in models)
    )
    matmul_floor = measure_matmul_floor(models, settings)
    log(
        "decode weight matmuls alone (matmul floor): "
        + "; ".join(
            f"{m.label} batch {b}: {summary['median_ms']:.2f} ms"
            for m in models
            for b, summary in matmul_floor[m.role].items()
        )
    )
    inference, training = measure_steps(models, settings, log)
    # the better of the copies before and after: bandwidth drifts on a shared machine
    best_bandwidth = max(bandwidth, measure_bandwidth(settings))

    report = {
        "settings": dataclasses.asdict(settings),
        "machine": describe_machine(best_bandwidth, settings),
        "models": {m.role: m.describe() for m in models},
        "aten_ops": aten_ops,
        "matmul_floor": {
            role: {str(b): summary for b, summary in per_batch.items()} for role, per_batch in matmul_floor.items()
        },
        "inference": inference,
        "training": training,
    }
    for role, counts in aten_ops.items():
        counts["training_step"] = training[role]["aten_ops"]
    if twin_difference is not None:
        report["models"][ALL_ATTENTION]["max_abs_logit_difference_vs_baseline"] = twin_difference
    add_bandwidth_figures(report, models)
    add_ratios(report)
    report["targets"] = evaluate_targets(report, targets) if targets else []
    report["seconds"] = time.time() - started
    return report


def check_positions(models: list[BenchModel], settings: BenchSettings) -> None:
    """The longest context plus its decode steps fits every model's position embeddings."""
    max_positions = min(getattr(m.model.config, "max_position_embeddings", 10**9) for m in models)
    longest_context = max(context for _, context in settings.points)
    if longest_context + max(settings.warmup_steps, 3, settings.decode_tokens) > max_positions:
        raise ValueError(
            f"context {longest_context} plus decode steps exceeds max_position_embeddings ({max_positions})"
        )


def measure_bandwidth(settings: BenchSettings) -> float:
    return measure_memory_bandwidth(
        settings.bandwidth_bytes, settings.bandwidth_repeats, settings.device, settings.clock
    )["bytes_per_s"]


def measure_steps(models: list[BenchModel], settings: BenchSettings, log) -> tuple[list[dict], dict]:
    """Prefill and decode at every (mode, batch, context), then the training step; under the compile settings."""
    if settings.cuda:
        start_kernel_tracing(settings.device)
    with raised_recompile_limits(), compile_settings(settings):
        if settings.compile:
            compile_decode_steps(models, settings)
        inference = []
        for mode in settings.modes:
            for batch, context in settings.points:
                per_model = measure_inference(models, settings, mode, batch, context, log)
                for m in models:
                    point = {"mode": mode, "batch": batch, "context": context, "model": m.role}
                    inference.append({**point, **per_model[m.role]})
        training = measure_training(models, settings, log)
    return inference, training


def add_ratios(report: dict) -> None:
    report["ratios"] = compare(report, BASELINE, SHISHU)
    if ALL_ATTENTION in report["models"]:
        # The baseline's own class vs the same weights in ShishuLM code: the implementation's overhead.
        report["overhead"] = compare(report, BASELINE, ALL_ATTENTION)
        # The same code with and without the layout change: what the architecture alone saves.
        report["architecture"] = compare(report, ALL_ATTENTION, SHISHU)
