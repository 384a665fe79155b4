"""Prefill and decode: the caches, one (mode, batch, context) point timed for every model, the aten ops of a
prefill and a decode step, and the decode step's weight matmuls alone (the matmul floor)."""

import gc

import torch

from ..sizes import unique_parameters
from .inductor import cudagraph_skips
from .models import BenchModel, prompt_ids
from .profiling import profile_kernels, profile_step
from .roofline import forward_flops, kv_cache_bytes, matmul_floor_pass
from .settings import BenchSettings
from .timing import gc_paused, inference_context, interleaved, summarize, timed


def new_cache(model, mode: str, max_cache_len: int):
    from transformers.cache_utils import DynamicCache, StaticCache

    if mode == "eager":
        return DynamicCache(config=model.config)
    return StaticCache(config=model.config, max_cache_len=max_cache_len)


def rewind_cache(cache, length: int) -> None:
    """Move the cache back to `length` tokens so that the same decode steps can be timed again."""
    from transformers.cache_utils import DynamicCache

    if isinstance(cache, DynamicCache):
        surplus = cache.get_seq_length() - length
        if surplus > 0:
            cache.crop(-surplus)
        return
    # Static layers write at `cumulative_length` and mask everything after it: rewinding the counter
    # (in place: compiled graphs hold its address) is enough.
    for layer in cache.layers:
        if isinstance(getattr(layer, "cumulative_length", None), torch.Tensor):
            layer.cumulative_length.fill_(length)


def count_inference_ops(models: list[BenchModel], settings: BenchSettings) -> dict:
    """Aten ops of one prefill (the shortest context, batch 1) and of the decode step after it, eager mode."""
    context = min(context for _, context in settings.points)
    ids = prompt_ids(models, 1, context, settings.seed)
    counts = {}
    with inference_context(settings.device):
        for m in models:
            cache = new_cache(m.model, "eager", 0)
            _, prefill = profile_step(
                lambda: m.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1),
                settings.device,
            )
            _, decode = profile_step(
                lambda: m.model(input_ids=ids[:, -1:], past_key_values=cache, use_cache=True), settings.device
            )
            counts[m.role] = {"context": context, "prefill": prefill, "decode_step": decode}
    return counts


def measure_matmul_floor(models: list[BenchModel], settings: BenchSettings) -> dict:
    """Time of the decode step's weight matmuls alone (`matmul_floor_pass`) per model and batch, interleaved."""
    results = {}
    with inference_context(settings.device):
        for batch in sorted({batch for batch, _ in settings.points}):
            passes = {m.role: matmul_floor_pass(m.model, batch) for m in models}
            samples = {m.role: [] for m in models}
            for m in models:
                passes[m.role]()  # warm-up
            with gc_paused():
                for repeat in range(2 * settings.repeats):
                    for m in interleaved(models, repeat):
                        samples[m.role].append(timed(passes[m.role], settings.device, settings.clock))
            for m in models:
                results.setdefault(m.role, {})[batch] = summarize(samples[m.role])
    return results


class InferencePoint:
    """The prompt, caches and steps of every model at one (mode, batch, context)."""

    def __init__(self, models: list[BenchModel], settings: BenchSettings, mode: str, batch: int, context: int):
        self.settings, self.mode, self.context = settings, mode, context
        self.ids = prompt_ids(models, batch, context, settings.seed)
        self.next_token = self.ids[:, -1:]
        # A CUDA graph is recorded on the step after the compiling one and replayed from the third on.
        self.warmup_steps = settings.warmup_steps if mode == "eager" else max(settings.warmup_steps, 3)
        self.max_cache_len = context + max(self.warmup_steps, settings.decode_tokens)
        self.caches = {m.role: new_cache(m.model, mode, self.max_cache_len) for m in models}

    def timed(self, fn) -> float:
        return timed(fn, self.settings.device, self.settings.clock)

    def empty_cache(self, m: BenchModel) -> None:
        if self.mode == "eager":
            self.caches[m.role] = new_cache(m.model, self.mode, self.max_cache_len)
        else:
            self.caches[m.role].reset()  # reuse the object: compiled graphs are specialised on its tensors

    def rewind(self, m: BenchModel) -> None:
        rewind_cache(self.caches[m.role], self.context)

    def prefill(self, m: BenchModel) -> None:
        m.model(input_ids=self.ids, past_key_values=self.caches[m.role], use_cache=True, logits_to_keep=1)

    def decode_step(self, m: BenchModel) -> None:
        compiled = self.mode == "compile"
        if compiled and self.settings.cuda:
            torch.compiler.cudagraph_mark_step_begin()  # each step is a new replay of the graph
        forward = m.compiled_forward if compiled else m.model
        forward(input_ids=self.next_token, past_key_values=self.caches[m.role], use_cache=True)

    def warm_up(self, m: BenchModel) -> dict:
        """One prefill, then the decode steps (this compiles the decode step in compile mode): the cache's bytes,
        the compile time and, on CUDA, the peak memory and the steps run without a CUDA graph."""
        result, device, skips_before = {}, self.settings.device, cudagraph_skips()
        if self.settings.cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            allocated = torch.cuda.memory_allocated(device)
        self.empty_cache(m)
        self.prefill(m)
        cache_bytes = kv_cache_bytes(self.caches[m.role])
        result["kv_cache_bytes" if self.mode == "eager" else "static_cache_bytes"] = cache_bytes
        first = self.timed(lambda: self.decode_step(m))
        for _ in range(self.warmup_steps - 1):
            self.decode_step(m)
        self.rewind(m)
        if self.mode == "compile":
            steady = self.timed(lambda: self.decode_step(m))
            self.rewind(m)
            result["compile_seconds"] = max(first - steady, 0.0)
        if self.settings.cuda:
            # This model's weights, plus what its prefill and decode steps allocated at their peak.
            result["peak_bytes"] = unique_parameters(m.model)[1] + torch.cuda.max_memory_allocated(device) - allocated
            if self.mode == "compile":
                # Reasons inductor ran the compiled step without a CUDA graph (0: every step is a replay).
                result["cudagraph_skips"] = cudagraph_skips() - skips_before
        return result

    def time_prefill(self, models: list[BenchModel]) -> dict:
        samples = {m.role: [] for m in models}
        for repeat in range(self.settings.repeats):
            for m in interleaved(models, repeat):
                self.empty_cache(m)
                samples[m.role].append(self.timed(lambda: self.prefill(m)))
        return samples

    def time_decode(self, models: list[BenchModel]) -> dict:
        # Decode steps alternate between the models one token at a time: a step is short enough that the
        # bandwidth drift of a shared machine hits neighbouring steps alike.
        samples = {m.role: [] for m in models}
        tokens = self.settings.decode_tokens
        for repeat in range(self.settings.repeats):
            for m in models:
                self.rewind(m)
            for token in range(tokens):
                for m in interleaved(models, repeat * tokens + token):
                    samples[m.role].append(self.timed(lambda: self.decode_step(m)))
        return samples


def measure_inference(
    models: list[BenchModel], settings: BenchSettings, mode: str, batch: int, context: int, log
) -> dict:
    """Prefill and decode timings of every model at one (mode, batch, context), interleaved."""
    point = InferencePoint(models, settings, mode, batch, context)
    with inference_context(settings.device):
        results = {m.role: point.warm_up(m) for m in models}
        with gc_paused():
            prefill_samples = point.time_prefill(models)
            decode_samples = point.time_decode(models)
        if settings.cuda:
            for m in models:
                point.rewind(m)
                results[m.role]["decode_kernels"] = profile_kernels(lambda: point.decode_step(m), settings.device)
    for m in models:
        results[m.role]["prefill"] = summarize(prefill_samples[m.role])
        results[m.role]["prefill_flops"] = forward_flops(m.model, batch, context, logits_tokens=1)
        results[m.role]["decode_per_token"] = summarize(decode_samples[m.role])
    point.caches.clear()  # free the KV caches before the next shape
    gc.collect()
    log(f"{mode:7s} batch {batch} context {context:5d}: " + "; ".join(_summary(m, results[m.role]) for m in models))
    return results


def _summary(m: BenchModel, result: dict) -> str:
    text = (
        f"{m.label} prefill {result['prefill']['median_ms']:.1f} ms, "
        f"decode {result['decode_per_token']['median_ms']:.2f} ms/token"
    )
    if "decode_kernels" in result:
        text += f" ({result['decode_kernels']['kernels']} kernels)"
    return text
