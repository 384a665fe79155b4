"""Clocks and samples: one timed call, interleaved order between models, medians and percentiles."""

import contextlib
import gc
import math
import statistics
import time

import torch


def timed(fn, device: str = "cpu", clock: str = "wall") -> float:
    """Seconds `fn()` takes. On CUDA: GPU time between two CUDA events recorded around the work `fn` queues,
    after the queue is drained (so a step whose kernels wait on the CPU's launches counts that wait); else
    wall (or process CPU) time."""
    if torch.device(device).type == "cuda":
        stream = torch.cuda.current_stream(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    now = time.process_time if clock == "cpu" else time.perf_counter
    start = now()
    fn()
    return now() - start


def summarize(samples: list[float]) -> dict:
    """Median and spread of timing samples (seconds in, milliseconds out)."""
    if not samples:
        raise ValueError("no samples to summarize")
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1e3,
        "p10_ms": percentile(ordered, 10) * 1e3,
        "p90_ms": percentile(ordered, 90) * 1e3,
        "min_ms": ordered[0] * 1e3,
        "n": len(ordered),
    }


def percentile(ordered: list[float], percent: float) -> float:
    """Linear-interpolated percentile of already sorted values."""
    position = (len(ordered) - 1) * percent / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def interleaved(items: list, repeat: int) -> list:
    """The models in rotating order (A B C, B C A, C A B, ...): every model takes every position in turn, so
    that drift, and whatever the previous model left in the caches, hit every model alike."""
    shift = repeat % len(items)
    return list(items[shift:]) + list(items[:shift])


@contextlib.contextmanager
def gc_paused():
    """No garbage collection inside the timed loops (a collection would land on one model's sample)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def inference_context(device: str):
    """`no_grad` on CUDA (CUDA graphs are recorded under it, as in `generate()`), `inference_mode` on CPU."""
    return torch.no_grad() if torch.device(device).type == "cuda" else torch.inference_mode()
