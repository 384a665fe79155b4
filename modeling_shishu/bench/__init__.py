"""`shishu bench`: a ShishuLM against its baseline, side by side in one process (memory, prefill, decode,
training), in PyTorch (`cli`, `runner`) or llama.cpp (`llamacpp`). What is measured and how:
docs/performance.md, "How `shishu bench` measures"; targets to check against: docs/bench_targets.yaml."""

from ..sizes import unique_parameters
from .cli import add_arguments, bench_log, check_report_outputs, run, settings_from_args
from .comparison import compare, ratio
from .inductor import compile_settings, inductor_fused_gemv
from .inference import measure_inference, new_cache, rewind_cache
from .models import ALL_ATTENTION, BASELINE, SHISHU, BenchModel, load_model, random_model
from .plot import plot_report
from .profiling import profile_kernels, profile_step
from .report import format_report
from .roofline import (
    bandwidth_limit_tokens_per_s,
    decode_matmul_weights,
    decode_weight_bytes,
    forward_flops,
    kv_cache_bytes,
    measure_memory_bandwidth,
)
from .runner import run_benchmark
from .settings import BenchSettings
from .targets import evaluate_targets, load_targets
from .timing import summarize
from .training import measure_training


__all__ = [
    "ALL_ATTENTION",
    "BASELINE",
    "SHISHU",
    "BenchModel",
    "BenchSettings",
    "add_arguments",
    "bandwidth_limit_tokens_per_s",
    "bench_log",
    "check_report_outputs",
    "compare",
    "compile_settings",
    "decode_matmul_weights",
    "decode_weight_bytes",
    "evaluate_targets",
    "format_report",
    "forward_flops",
    "inductor_fused_gemv",
    "kv_cache_bytes",
    "load_model",
    "load_targets",
    "measure_inference",
    "measure_memory_bandwidth",
    "measure_training",
    "new_cache",
    "plot_report",
    "profile_kernels",
    "profile_step",
    "random_model",
    "ratio",
    "rewind_cache",
    "run",
    "run_benchmark",
    "settings_from_args",
    "summarize",
    "unique_parameters",
]
