"""The training step: forward + backward time, tokens per second, MFU and peak memory of every model."""

import gc

import torch

from ..sizes import training_flops_per_token, unique_parameters
from .inductor import compile_forward
from .models import BenchModel, prompt_ids
from .profiling import profile_step
from .roofline import forward_flops
from .settings import BenchSettings
from .timing import gc_paused, interleaved, summarize, timed


def device_peak_flops(settings: BenchSettings) -> float | None:
    """Peak FLOP/s for MFU: the setting, else the GPU's datasheet value (`training.metrics`), else None."""
    from ..training.metrics import peak_flops

    if settings.peak_flops:
        return settings.peak_flops
    return peak_flops(torch.cuda.get_device_name(settings.device)) if settings.cuda else None


def measure_training(models: list[BenchModel], settings: BenchSettings, log) -> dict:
    """Forward + backward step time (`train_batch` x `train_seq_len` tokens, loss on the inputs), tokens per
    second, MFU against the device's peak, and peak memory."""
    ids = prompt_ids(models, settings.train_batch, settings.train_seq_len, settings.seed + 1)
    forwards = {
        m.role: compile_forward(m.model.forward, settings) if settings.train_compile else m.model for m in models
    }

    def step(m: BenchModel):
        m.model.zero_grad(set_to_none=True)
        forwards[m.role](input_ids=ids, labels=ids).loss.backward()

    def run(m: BenchModel) -> float:
        return timed(lambda: step(m), settings.device, settings.clock)

    results, samples = {}, {m.role: [] for m in models}
    try:
        for m in models:
            m.model.train()
            first = run(m)  # warm-up (compiles with train_compile)
            results[m.role] = {"compile_seconds": max(first - run(m), 0.0)} if settings.train_compile else {}
            m.model.zero_grad(set_to_none=True)
            peak, aten_ops = profile_step(lambda: step(m), settings.device)
            m.model.zero_grad(set_to_none=True)
            results[m.role].update(peak_bytes_during_step=peak, aten_ops=aten_ops)
        with gc_paused():
            for repeat in range(settings.train_repeats):
                for m in interleaved(models, repeat):
                    samples[m.role].append(run(m))
                    m.model.zero_grad(set_to_none=True)
    finally:
        for m in models:
            m.model.zero_grad(set_to_none=True)
            m.model.eval()
    for m in models:
        results[m.role].update(training_figures(m, samples[m.role], results[m.role], settings))
    log(
        f"training {settings.train_batch} x {settings.train_seq_len}{' compiled' if settings.train_compile else ''}: "
        + "; ".join(_summary(m, results[m.role]) for m in models)
    )
    gc.collect()
    return results


def training_figures(m: BenchModel, samples: list[float], result: dict, settings: BenchSettings) -> dict:
    """Step time, FLOPs, peak memory, tokens per second and MFU of one model's training step."""
    step = summarize(samples)
    tokens_per_s = settings.train_batch * settings.train_seq_len / (step["median_ms"] / 1e3)
    # MFU as the training recipe reports it: model FLOPs per token (6N + attention, PaLM's convention).
    model_flops_per_token = training_flops_per_token(m.model.config, settings.train_seq_len)
    peak_flops = device_peak_flops(settings)
    return {
        "step": step,
        # forward + backward ~ 3 x the forward FLOPs (the backward computes two products per forward product)
        "flops": 3
        * forward_flops(m.model, settings.train_batch, settings.train_seq_len, logits_tokens=settings.train_seq_len),
        "peak_bytes": unique_parameters(m.model)[1] + result["peak_bytes_during_step"],
        "tokens_per_s": tokens_per_s,
        "model_flops_per_token": model_flops_per_token,
        "mfu": model_flops_per_token * tokens_per_s / peak_flops if peak_flops else None,
    }


def _summary(m: BenchModel, result: dict) -> str:
    text = f"{m.label} {result['step']['median_ms']:.1f} ms, {result['tokens_per_s']:,.0f} tokens/s"
    if result["mfu"] is not None:
        text += f", MFU {result['mfu']:.1%}"
    return text + f", peak {result['peak_bytes'] / 2**20:.0f} MiB"
