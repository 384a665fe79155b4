"""`shishu bench`: its command-line options, and the run that prints the report and writes its files."""

import argparse
import sys
from pathlib import Path

from ..io_utils import atomic_write_json, check_output_location
from ..loading import add_trust_remote_code_argument
from ..precision import default_device, native_dtype_name
from .plot import plot_report
from .report import format_report
from .runner import run_benchmark
from .settings import BenchSettings
from .targets import load_targets


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 256,1024, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 256,1024, got {text!r}")
    return values


def _shape_list(text: str) -> list[tuple[int, int]]:
    try:
        shapes = [tuple(int(x) for x in part.lower().split("x")) for part in text.split(",") if part.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(shape) != 2 for shape in shapes):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated BATCHxCONTEXT pairs like 1x512,32x4096, got {text!r}"
        )
    return shapes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_model_arguments(parser)
    _add_measurement_arguments(parser)
    _add_device_arguments(parser)
    _add_output_arguments(parser)
    add_trust_remote_code_argument(parser)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        default="pytorch",
        choices=["pytorch", "llama.cpp"],
        help="pytorch (default), or llama.cpp: GGUF exports in llama-cpp-python (modeling_shishu/bench/llamacpp.py)",
    )
    llama = parser.add_argument_group("llama.cpp only")
    llama.add_argument(
        "--quant", choices=["q8_0", "q4_k_m"], help="quantize checkpoint exports with llama.cpp's quantizer"
    )
    llama.add_argument(
        "--bits-per-byte",
        type=int,
        default=0,
        metavar="CHARS",
        help="also score both models on this many characters of held-out Shakespeare (bits/byte)",
    )
    llama.add_argument(
        "--no-flash-attn",
        action="store_true",
        help="time with flash attention off (the KV cache is reported both ways in any case)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="the ShishuLM: a checkpoint folder or a Hub id (or --mlp-layers; llama.cpp: also a .gguf file)",
    )
    parser.add_argument(
        "--baseline",
        required=True,
        help="its parent: a checkpoint folder, an offline parent name (smollm2-135m) or a Hub id",
    )
    parser.add_argument(
        "--random-init", action="store_true", help="random weights in both models: only their config.json is read"
    )
    parser.add_argument(
        "--mlp-layers",
        type=_int_list,
        default=None,
        metavar="I,I,...",
        help="with --random-init, instead of --model: the baseline's config with these layers MLP-only",
    )
    parser.add_argument(
        "--share",
        default="pairs",
        choices=["pairs", "none"],
        help="with --mlp-layers: adjacent MLP-only layers share weights in pairs (default) or not",
    )


def _add_measurement_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--contexts",
        type=_int_list,
        default=None,
        metavar="N,N,...",
        help="prompt lengths (default 256,1024,2048,4096; --quick: 256)",
    )
    parser.add_argument("--batch", type=_int_list, default=None, metavar="B,B,...", help="batch sizes (default 1)")
    parser.add_argument(
        "--shapes",
        type=_shape_list,
        default=None,
        metavar="BxN,...",
        help="(batch, context) points to measure instead of every --batch x --contexts, e.g. 1x512,32x4096",
    )
    parser.add_argument(
        "--dtype",
        default="native",
        help="native (default: bfloat16 where the device computes it natively, else float32), float32, bfloat16 or "
        "float16",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also measure the static cache + torch.compile(fullgraph=True) decode (CUDA graphs on CUDA)",
    )
    parser.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode of the compiled decode (default: reduce-overhead on CUDA, inductor's default on CPU)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (default 5; --quick: 3)")
    parser.add_argument("--decode-tokens", type=int, default=None, help="decode steps timed per repeat (default 8)")
    parser.add_argument(
        "--train-seq-len", type=int, default=None, help="training step sequence length (default 1024; --quick: 128)"
    )
    parser.add_argument("--train-batch", type=int, default=None, help="training step batch size (default 1)")
    parser.add_argument(
        "--train-compile",
        action="store_true",
        help="time the training step compiled with torch.compile(fullgraph=True)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak TFLOP/s for MFU (default: looked up from the GPU's name)",
    )


def _add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice, one per core)"
    )
    parser.add_argument(
        "--attn-implementation", default="sdpa", choices=["sdpa", "eager"], help="attention backend for both models"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N] (timed with CUDA events)")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="on CPU: wall time (default), or process CPU time: with --threads 1 on a shared machine it leaves "
        "out the time other processes hold the core",
    )
    parser.add_argument(
        "--no-inductor-gemv",
        action="store_true",
        help="--compile on CPU: keep BLAS GEMV for batch-1 matmuls instead of inductor's fused reductions",
    )
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend of --compile (default inductor; eager = trace only)",
    )
    parser.add_argument(
        "--bandwidth-mib",
        type=int,
        default=512,
        help="size of the tensor copied to measure memory bandwidth (default 512)",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-overhead-check", action="store_true", help="skip the all-attention ShishuLM vs baseline class comparison"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one short context, fewer repeats: about a minute for a 135M model"
    )
    parser.add_argument("--json", metavar="OUT.json", help="write the full report as JSON")
    parser.add_argument("--plot", metavar="OUT.png", help="plot decode latency vs context and the ratios")
    parser.add_argument(
        "--targets",
        metavar="FILE.yaml",
        help="check the report against the targets in FILE (e.g. docs/bench_targets.yaml); without it the report "
        "gives ratios and no verdicts",
    )


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    overrides = {
        "contexts": args.contexts,
        "batches": args.batch,
        "repeats": args.repeats,
        "decode_tokens": args.decode_tokens,
        "train_seq_len": args.train_seq_len,
        "train_batch": args.train_batch,
        "shapes": args.shapes,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    device = args.device or default_device()
    overrides.update(
        dtype=native_dtype_name(device) if args.dtype == "native" else args.dtype,
        compile=args.compile,
        threads=args.threads,
        attn_implementation=args.attn_implementation,
        device=args.device,
        clock=args.clock,
        compile_backend=args.compile_backend,
        inductor_gemv=not args.no_inductor_gemv,
        bandwidth_bytes=args.bandwidth_mib * 2**20,
        overhead_check=not args.no_overhead_check,
        compile_mode=args.compile_mode,
        train_compile=args.train_compile,
        peak_flops=args.peak_tflops * 1e12 if args.peak_tflops else None,
        random_init=args.random_init,
        mlp_layers=args.mlp_layers,
        share=args.share,
        trust_remote_code=args.trust_remote_code,
    )
    return BenchSettings.quick(**overrides) if args.quick else BenchSettings(**overrides)


def bench_log(message: str) -> None:
    """Progress and file notes of `shishu bench`, on stderr (the report itself goes to stdout)."""
    print(f"shishu bench: {message}", file=sys.stderr, flush=True)


def check_report_outputs(*paths) -> None:
    """The report files can be written: checked now, not after the benchmark has run."""
    for output in paths:
        if output and Path(output).is_dir():
            raise ValueError(f"{output} is a directory; give a file path")
        if output:
            check_output_location(output)


def run(args: argparse.Namespace) -> int:
    if args.engine == "llama.cpp":
        from .llamacpp import run_from_args

        return run_from_args(args)
    llama_only = [
        ("--quant", args.quant),
        ("--bits-per-byte", args.bits_per_byte),
        ("--no-flash-attn", args.no_flash_attn),
    ]
    if any(value for _, value in llama_only):
        raise ValueError(f"{', '.join(f for f, v in llama_only if v)} only with --engine llama.cpp")
    settings = settings_from_args(args)
    settings.check()
    check_report_outputs(args.json, args.plot)
    targets = load_targets(args.targets) if args.targets else None
    report = run_benchmark(args.model, args.baseline, settings, log=bench_log, targets=targets)
    print(format_report(report))
    if args.json:
        atomic_write_json(args.json, report)
        bench_log(f"wrote {args.json}")
    if args.plot:
        plot_report(report, args.plot)
        bench_log(f"wrote {args.plot}")
    return 0
