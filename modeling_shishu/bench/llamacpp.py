"""`shishu bench --engine llama.cpp`: a ShishuLM against its parent in llama.cpp, through llama-cpp-python.

    pip install -e ".[llamacpp]"          # llama-cpp-python, which compiles llama.cpp (minutes; pip caches the wheel)
    shishu bench --engine llama.cpp --model shishu-m10 --baseline smollm2-135m --contexts 256,1024,2048

`--model` and `--baseline` are GGUF files, or checkpoint folders (or, for the baseline, an offline parent
name) that are exported first with `shishu export-gguf` at `--dtype` (a parent becomes the all-attention
layout of the same architecture, so both run the same llama.cpp code). Both models are loaded in the
same process and every timing alternates between them (the order rotates every repeat), as
`shishu bench` does for PyTorch. For each prompt length N:

- prompt processing: tokens/s for evaluating N prompt tokens into an empty cache (llama.cpp's `pp`);
- generation: tokens/s for `--decode-tokens` single-token steps right after that prompt (`tg` at depth N).

The KV cache of each model is read from llama.cpp's own report (`llama_kv_cache: size = ...`), and the
state llama.cpp saves for a sequence after the longest prompt is read from its state API. Ratios are
ShishuLM / parent tokens/s (> 1: ShishuLM is faster) and ShishuLM / parent bytes. Flash attention is
on: without it llama.cpp pads every layer's V cache to the widest layer's (see `export_gguf`), so the KV
cache is also reported as llama.cpp allocates it with flash attention off.

`--quant q8_0|q4_k_m` quantizes checkpoint exports with llama.cpp's quantizer; `--bits-per-byte CHARS` scores
both models in llama.cpp on the first CHARS characters of the held-out Shakespeare test split.
"""

import contextlib
import io
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


# --dtype of `shishu bench` -> `shishu export-gguf --dtype`
GGUF_DTYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}

_KV_LINE = re.compile(
    r"llama_kv_cache: size = +(?P<size>[\d.]+) MiB \( *(?P<cells>\d+) cells, +(?P<layers>\d+) layers.*?"
    r"K \((?P<k_type>\w+)\): +(?P<k>[\d.]+) MiB, V \((?P<v_type>\w+)\): +(?P<v>[\d.]+) MiB"
)


# ---------------------------------------------------------------------------------------- runtime


@dataclass
class LoadedGGUF:
    """A GGUF loaded in llama.cpp, with what llama.cpp reported while loading it."""

    path: Path
    llm: object  # llama_cpp.Llama
    log: str
    kv_cache: dict = field(default_factory=dict)


def kv_cache_report(log: str) -> dict:
    """llama.cpp's report of the KV cache it allocated (`llama_kv_cache: size = ...`), in MiB."""
    match = _KV_LINE.search(log)
    if match is None:
        raise RuntimeError("llama.cpp did not report a KV cache (no 'llama_kv_cache: size = ...' line)")
    return {
        "size_mib": float(match["size"]),
        "cells": int(match["cells"]),
        "layers": int(match["layers"]),
        "k_mib": float(match["k"]),
        "v_mib": float(match["v"]),
        "k_type": match["k_type"],
        "v_type": match["v_type"],
    }


def load_gguf(
    path: str | Path,
    n_ctx: int,
    threads: int | None = None,
    flash_attn: bool = True,
    kv_type: str = "f16",
    n_batch: int = 512,
    logits_all: bool = False,
) -> LoadedGGUF:
    """Load `path` in llama.cpp, capturing its log (llama-cpp-python prints it to `sys.stderr`).

    llama.cpp's defaults keep the KV cache in f16, and its CPU flash-attention kernel rounds to f16 too:
    `flash_attn=False, kv_type="f32"` is the setting in which llama.cpp computes in float32 throughout.
    """
    import llama_cpp
    from llama_cpp import _logger

    threads = threads or os.cpu_count()
    cache_type = {"f16": llama_cpp.GGML_TYPE_F16, "f32": llama_cpp.GGML_TYPE_F32}[kv_type]
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        llm = llama_cpp.Llama(
            str(path),
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_batch,
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=flash_attn,
            type_k=cache_type,
            type_v=cache_type,
            logits_all=logits_all,
            verbose=True,
        )
    _logger.set_verbose(False)  # the log level is process-wide: keep the timed runs quiet
    log = captured.getvalue()
    return LoadedGGUF(Path(path), llm, log, kv_cache_report(log))


def weights_type(llm) -> str:
    """The weight type a loaded GGUF records in `general.file_type`, named as `--dtype` names it (f16, q8_0)."""
    import gguf

    value = llm.metadata.get("general.file_type")
    try:
        return gguf.LlamaFileType(int(value)).name.split("_", 1)[1].lower()  # MOSTLY_Q8_0 -> q8_0
    except (TypeError, ValueError):
        return "unknown"


def last_logits(llm) -> np.ndarray:
    """The logits llama.cpp computed for the last token of the last `eval` (float32, a copy)."""
    import llama_cpp

    pointer = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).copy()


def greedy_generate(llm, prompt_ids: list[int], max_new_tokens: int) -> tuple[list[int], list[np.ndarray]]:
    """Greedy decoding in llama.cpp: argmax of llama.cpp's logits at every step (no sampler, no stop token).
    Returns the new tokens and the logits each was picked from."""
    llm.reset()
    llm.eval(list(prompt_ids))
    tokens, logits = [], []
    for _ in range(max_new_tokens):
        step = last_logits(llm)
        token = int(np.argmax(step))
        tokens.append(token)
        logits.append(step)
        llm.eval([token])
    return tokens, logits


def bits_per_byte(llm, text: str, window: int = 512) -> dict:
    """Bits per UTF-8 byte of `text` in llama.cpp: non-overlapping windows of `window` tokens, every token
    after a window's first scored from llama.cpp's logits (the model must be loaded with `logits_all=True`
    and `n_ctx >= window`). Bytes are those of the scored tokens, so the figure does not depend on the tokenizer."""
    from tqdm.auto import tqdm

    tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    nats, scored_bytes, scored = 0.0, 0, 0
    starts = range(0, len(tokens) - 1, window)
    for start in tqdm(starts, desc="bits/byte", unit="window", disable=None):
        chunk = tokens[start : start + window]
        if len(chunk) < 2:
            break
        llm.reset()
        llm.eval(chunk)
        logits = np.asarray(llm.scores[: len(chunk) - 1], dtype=np.float64)
        peak = logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
        targets = np.asarray(chunk[1:])
        nats += float((log_norm - logits[np.arange(len(targets)), targets]).sum())
        scored_bytes += len(llm.detokenize(chunk[1:]))
        scored += len(targets)
    return {
        "bits_per_byte": nats / np.log(2) / scored_bytes,
        "tokens": scored,
        "bytes": scored_bytes,
        "window": window,
    }


def heldout_text(chars: int) -> str:
    """The first `chars` characters of the held-out Shakespeare test split (its works joined)."""
    from ..assets.corpora import shakespeare_texts

    return "\n\n".join(shakespeare_texts("test"))[:chars]


def sequence_state_bytes(llm, prompt_ids: list[int]) -> int:
    """Bytes of the state llama.cpp saves for sequence 0 after evaluating `prompt_ids` (its KV cells)."""
    import llama_cpp

    llm.reset()
    llm.eval(list(prompt_ids))
    return int(llama_cpp.llama_state_seq_get_size(llm._ctx.ctx, 0))


# -------------------------------------------------------------------------------------- benchmark


@dataclass
class LlamaCppBenchSettings:
    contexts: tuple = (256, 1024, 2048)
    decode_tokens: int = 32
    repeats: int = 5
    threads: int | None = None
    dtype: str = "f32"
    quant: str | None = None  # quantize checkpoint exports with llama.cpp (q8_0, q4_k_m)
    flash_attn: bool = True
    bits_per_byte_chars: int = 0  # > 0: score both models on this much held-out text

    @classmethod
    def quick(cls, **overrides):
        return cls(**{"contexts": (256,), "decode_tokens": 16, "repeats": 3, **overrides})


def _as_gguf(source: str, dtype: str, folder: Path, role: str, log, quant: str | None = None) -> Path:
    """A GGUF file for `source`: the file itself, or an export of a checkpoint folder / offline parent
    (quantized by llama.cpp when `quant` is given)."""
    path = Path(source)
    if path.is_file() and path.suffix == ".gguf":
        return path
    from ..assets import fetch_parent
    from ..conversion.export_gguf import export_gguf, quantize_gguf

    checkpoint = fetch_parent(source)
    out = folder / f"{role}.gguf"
    log(f"exporting {checkpoint} to GGUF ({'f32' if quant else dtype})")
    export_gguf(checkpoint, out, dtype="f32" if quant else dtype)
    if quant:
        quantize_gguf(out, folder / f"{role}-{quant}.gguf", quant, log=log)
        out.unlink()
        out = folder / f"{role}-{quant}.gguf"
    return out


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def run_llamacpp_benchmark(model: str, baseline: str, settings: LlamaCppBenchSettings, log=print) -> dict:
    """Prompt-processing and generation tokens/s of `model` and `baseline` in llama.cpp, interleaved."""
    import llama_cpp

    n_ctx = max(settings.contexts) + settings.decode_tokens
    generator = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="shishu-bench-gguf-") as folder:
        paths = {
            "shishu": _as_gguf(model, settings.dtype, Path(folder), "shishu", log, settings.quant),
            "baseline": _as_gguf(baseline, settings.dtype, Path(folder), "baseline", log, settings.quant),
        }
        loaded = {role: load_gguf(path, n_ctx, settings.threads, settings.flash_attn) for role, path in paths.items()}
        gguf_bytes = {role: path.stat().st_size for role, path in paths.items()}  # exports live until here (mmapped)
        # The KV cache as llama.cpp allocates it with flash attention the other way (not timed)
        other_kv = {}
        for role, path in paths.items():
            other = load_gguf(path, n_ctx, settings.threads, not settings.flash_attn)
            other_kv[role] = other.kv_cache
            other.llm.close()
        scores = {}
        if settings.bits_per_byte_chars:
            text = heldout_text(settings.bits_per_byte_chars)
            for role, path in paths.items():
                log(f"bits/byte of the {role} on {len(text):,} held-out characters")
                scorer = load_gguf(path, 512, settings.threads, settings.flash_attn, logits_all=True)
                scores[role] = bits_per_byte(scorer.llm, text)
                scorer.llm.close()
    vocab = min(entry.llm.n_vocab() for entry in loaded.values())
    # Plain text ids (the special tokens sit at the start of a BPE vocabulary); the values do not change the speed.
    token_ids = generator.integers(vocab // 4, vocab, size=n_ctx).tolist()
    samples = _interleaved_samples(loaded, token_ids, settings, log)

    longest = token_ids[: max(settings.contexts)]
    models = {}
    for role, entry in loaded.items():
        models[role] = {
            "source": model if role == "shishu" else baseline,
            "gguf_bytes": gguf_bytes[role],
            "weights": weights_type(entry.llm),
            "kv_cache": entry.kv_cache,
            f"kv_cache_flash_attn_{'off' if settings.flash_attn else 'on'}": other_kv[role],
            **({"heldout": scores[role]} if role in scores else {}),
            "sequence_state_bytes": {"context": len(longest), "bytes": sequence_state_bytes(entry.llm, longest)},
        }
    return {
        "engine": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "settings": {
            **settings.__dict__,
            "contexts": list(settings.contexts),
            "n_ctx": n_ctx,
            "threads": settings.threads or os.cpu_count(),
        },
        "machine": {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
        "models": models,
        "kv_cache_ratio": models["shishu"]["kv_cache"]["size_mib"] / models["baseline"]["kv_cache"]["size_mib"],
        "kv_cache_ratio_flash_attn_other": other_kv["shishu"]["size_mib"] / other_kv["baseline"]["size_mib"],
        "rows": _rows(samples, settings),
    }


def _interleaved_samples(loaded: dict, token_ids: list[int], settings: LlamaCppBenchSettings, log) -> dict:
    """Tokens/s samples per (role, "pp" or "tg", context), the models alternating (order reversed every repeat)."""
    samples = {(role, kind, n): [] for role in loaded for kind in ("pp", "tg") for n in settings.contexts}
    roles = list(loaded)
    for entry in loaded.values():  # warm-up: page the weights in, size the compute buffers
        entry.llm.reset()
        entry.llm.eval(token_ids[: min(settings.contexts)])
    for repeat in range(settings.repeats):
        order = roles if repeat % 2 == 0 else roles[::-1]
        for n in settings.contexts:
            prompt, steps = token_ids[:n], token_ids[n : n + settings.decode_tokens]
            for role in order:
                llm = loaded[role].llm

                def prompt_processing():
                    llm.reset()
                    llm.eval(prompt)

                def generation():
                    for token in steps:
                        llm.eval([token])

                samples[(role, "pp", n)].append(n / _timed(prompt_processing))
                samples[(role, "tg", n)].append(len(steps) / _timed(generation))
        log(f"repeat {repeat + 1}/{settings.repeats} done")
    return samples


def _rows(samples: dict, settings: LlamaCppBenchSettings) -> list[dict]:
    def spread(values):
        ordered = sorted(values)
        return {"median": statistics.median(values), "min": ordered[0], "max": ordered[-1], "samples": values}

    rows = []
    for n in settings.contexts:
        for kind in ("pp", "tg"):
            shishu, base = spread(samples[("shishu", kind, n)]), spread(samples[("baseline", kind, n)])
            rows.append(
                {
                    "figure": kind,
                    "context": n,
                    "tokens_per_s": {"shishu": shishu, "baseline": base},
                    "ratio": shishu["median"] / base["median"],
                }
            )
    return rows


def format_llamacpp_report(report: dict) -> str:
    settings = report["settings"]
    # what the files hold: --dtype only applies to checkpoints exported here, not to GGUF files given as-is
    weights = "/".join(sorted({entry["weights"] for entry in report["models"].values()}))
    lines = [
        f"llama.cpp (llama-cpp-python {report['llama_cpp_python']}), {weights} weights, "
        f"{settings['threads']} threads, "
        f"flash attention {'on' if settings['flash_attn'] else 'off'}, n_ctx {settings['n_ctx']}, "
        f"{settings['repeats']} repeats (median tokens/s; ratio = ShishuLM / parent)",
        "",
        f"{'figure':<32} | {'parent tok/s':>12} | {'ShishuLM tok/s':>14} | {'ratio':>6}",
        f"{'-' * 32}-+-{'-' * 12}-+-{'-' * 14}-+-{'-' * 6}",
    ]
    for row in report["rows"]:
        name = (
            f"prompt processing, {row['context']} tokens"
            if row["figure"] == "pp"
            else f"generation at depth {row['context']}"
        )
        speeds = row["tokens_per_s"]
        ratio = f"x{row['ratio']:.2f}"
        lines.append(
            f"{name:<32} | {speeds['baseline']['median']:>12.1f} | {speeds['shishu']['median']:>14.1f} | {ratio:>6}"
        )
    parent, shishu = report["models"]["baseline"], report["models"]["shishu"]
    other = f"kv_cache_flash_attn_{'off' if settings['flash_attn'] else 'on'}"
    lines += [
        "",
        f"KV cache (llama.cpp's report, {parent['kv_cache']['cells']} cells): "
        f"parent {parent['kv_cache']['size_mib']:.2f} MiB, "
        f"ShishuLM {shishu['kv_cache']['size_mib']:.2f} MiB (x{report['kv_cache_ratio']:.3f})",
        f"KV cache with flash attention {'off' if settings['flash_attn'] else 'on'}: "
        f"parent {parent[other]['size_mib']:.2f} MiB, ShishuLM {shishu[other]['size_mib']:.2f} MiB "
        f"(x{report['kv_cache_ratio_flash_attn_other']:.3f})",
        f"GGUF files: parent {parent['gguf_bytes']:,} B, ShishuLM {shishu['gguf_bytes']:,} B",
        f"sequence state after {parent['sequence_state_bytes']['context']} tokens: parent "
        f"{parent['sequence_state_bytes']['bytes']:,} B, ShishuLM {shishu['sequence_state_bytes']['bytes']:,} B",
    ]
    if "heldout" in parent:
        lines.append(
            f"held-out bits/byte ({parent['heldout']['bytes']:,} bytes): parent {parent['heldout']['bits_per_byte']:.4f}, "
            f"ShishuLM {shishu['heldout']['bits_per_byte']:.4f}"
        )
    return "\n".join(lines)


def run_from_args(args) -> int:
    """`shishu bench --engine llama.cpp ...` (the options shared with the PyTorch benchmark)."""
    from ..io_utils import atomic_write_json
    from .cli import bench_log, check_report_outputs

    pytorch_only = [
        ("--compile", args.compile),
        ("--batch", args.batch),
        ("--shapes", args.shapes),
        ("--plot", args.plot),
        ("--random-init", args.random_init),
        ("--mlp-layers", args.mlp_layers),
        ("--train-compile", args.train_compile),
        ("--device", args.device != "cpu"),
        ("--targets", args.targets),
    ]
    unsupported = [flag for flag, value in pytorch_only if value]
    if unsupported:
        raise ValueError(f"{', '.join(unsupported)} not available with --engine llama.cpp")
    if args.model is None:
        raise ValueError("--engine llama.cpp needs --model (a GGUF file or a ShishuLM checkpoint folder)")
    if args.dtype not in GGUF_DTYPES:
        raise ValueError(f"--dtype {args.dtype!r} with --engine llama.cpp: choose from {', '.join(GGUF_DTYPES)}")
    overrides = {
        "contexts": tuple(args.contexts) if args.contexts else None,
        "decode_tokens": args.decode_tokens,
        "repeats": args.repeats,
        "threads": args.threads,
        "quant": args.quant,
        "bits_per_byte_chars": args.bits_per_byte,
        "flash_attn": False if args.no_flash_attn else None,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides["dtype"] = GGUF_DTYPES[args.dtype]
    settings = LlamaCppBenchSettings.quick(**overrides) if args.quick else LlamaCppBenchSettings(**overrides)
    check_report_outputs(args.json)
    report = run_llamacpp_benchmark(args.model, args.baseline, settings, log=bench_log)
    print(format_llamacpp_report(report))
    if args.json:
        atomic_write_json(args.json, report)
    return 0


__all__ = [
    "LlamaCppBenchSettings",
    "bits_per_byte",
    "format_llamacpp_report",
    "greedy_generate",
    "kv_cache_report",
    "last_logits",
    "load_gguf",
    "run_llamacpp_benchmark",
    "sequence_state_bytes",
    "weights_type",
]
