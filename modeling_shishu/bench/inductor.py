"""torch.compile switches of the compiled steps: inductor's fused single-row matmuls on CPU, dynamo's recompile
limits, and the compiled decode step of every model."""

import contextlib
import sys

import torch

from .settings import BenchSettings


# The LM head (vocab x hidden) must qualify too, so the size bound is lifted far above any vocabulary.
_GEMV_MAX_DIMENSION = 2**24


@contextlib.contextmanager
def inductor_fused_gemv():
    """Within the block, inductor compiles CPU matmuls with one row (a batch-1 decode step) into fused
    multiply-reduce kernels (its `decompose_mm_pass`) for every matrix size; the settings are restored after.

    On CPUs whose BLAS GEMV streams weights well below the memory bandwidth, this is what lets a compiled decode
    step approach the bandwidth limit (docs/performance.md). The pass reads its size bound once, when inductor
    first loads it, so an already loaded pass gets the bound set directly.
    """
    import torch._inductor.config as inductor_config

    def loaded_pass():
        return sys.modules.get("torch._inductor.fx_passes.decompose_mem_bound_mm")

    previous_options = inductor_config.post_grad_fusion_options
    options = dict(previous_options)
    options["decompose_mm_pass"] = {
        **options.get("decompose_mm_pass", {}),
        "cpu_max_other_dimension_decomposition": _GEMV_MAX_DIMENSION,
    }
    inductor_config.post_grad_fusion_options = options
    if loaded_pass() is not None:
        loaded_pass().cpu_max_other_dimension_decomposition = _GEMV_MAX_DIMENSION
    try:
        yield
    finally:
        inductor_config.post_grad_fusion_options = previous_options
        if loaded_pass() is not None:  # back to the bound the previous options (or torch's default) give
            default = getattr(loaded_pass(), "CPU_MAX_OTHER_DIMENSION_DECOMPOSITION", None)
            previous_pass = previous_options.get("decompose_mm_pass", {})
            loaded_pass().cpu_max_other_dimension_decomposition = previous_pass.get(
                "cpu_max_other_dimension_decomposition", default
            )


def compile_settings(settings: BenchSettings):
    """torch settings for the compiled steps: on CPU (decode compiled), inductor's fused single-row matmuls
    unless `inductor_gemv` is off; nothing on CUDA, where cuBLAS serves batch-1 matmuls."""
    if settings.compile and settings.inductor_gemv and not settings.cuda:
        return inductor_fused_gemv()
    return contextlib.nullcontext()


@contextlib.contextmanager
def raised_recompile_limits():
    """One compiled decode graph per (model, batch, context): more than dynamo's default of 8 per function."""
    import torch._dynamo.config as dynamo_config

    previous = {
        name: getattr(dynamo_config, name)
        for name in ("recompile_limit", "accumulated_recompile_limit")
        if hasattr(dynamo_config, name)
    }
    for name in previous:
        setattr(dynamo_config, name, max(previous[name], 1024))
    try:
        yield
    finally:
        for name, value in previous.items():
            setattr(dynamo_config, name, value)


def compile_forward(forward, settings: BenchSettings, **kwargs):
    """`torch.compile` with `fullgraph=True`: a graph break is an error, not a silent slow path."""
    return torch.compile(forward, fullgraph=True, dynamic=False, backend=settings.compile_backend, **kwargs)


def compile_decode_steps(models: list, settings: BenchSettings) -> None:
    """Set every model's `compiled_forward` (the decode step of the compile mode)."""
    mode_kwargs = {"mode": settings.decode_compile_mode} if settings.decode_compile_mode else {}
    for m in models:
        m.compiled_forward = compile_forward(m.model.forward, settings, **mode_kwargs)


def cudagraph_skips() -> int:
    """How often inductor has run a compiled step without its CUDA graph, so far in this process."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["cudagraph_skips"]
