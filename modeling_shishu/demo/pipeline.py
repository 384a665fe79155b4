"""The demo's stages after the parent is fetched, each a documented command of the package."""

import argparse
from pathlib import Path

from ..conversion.export_gguf import quantized_path
from ..precision import native_dtype_name
from .stages import CPU_DDP_ENV, Stage, accelerate_launch, llama_cpp_available, shishu


VARIANT = "shishu-smollm2-135m-instruct-m10"
HEAL_RECIPE = Path(__file__).resolve().parent / "heal.yaml"
# The tasks of the offline suite the demo scores, with how many documents of each (a seeded random sample):
# those on which the parent is clearly above chance, sized so that parent and ShishuLM together take about six
# minutes on two CPU cores (docs/model_family.md, "Evaluation cost"). Cheap tasks get more documents.
DEMO_TASKS = {
    "arc_easy": 500,
    "hellaswag": 250,
    "piqa": 400,
    "sciq": 250,
    "lambada_openai": 300,
    "sst2": 872,
}


def heal_overrides(args: argparse.Namespace, student: Path, teacher: Path, output_dir: Path) -> list[str]:
    """The demo's changes to the healing recipe: a short run from the fitted conversion."""
    return [
        f"--student_name_or_path={student}",
        f"--teacher_name_or_path={teacher}",
        f"--output_dir={output_dir}",
        f"--max_steps={args.heal_steps}",
        f"--max_length={args.heal_seq_length}",
        "--per_device_train_batch_size=2",
        "--gradient_accumulation_steps=1",
        "--warmup_steps=0.1",
        f"--learning_rate={args.heal_lr}",
        # bf16 autocast and a bf16 teacher where the CPU computes bf16 natively (1.4x faster steps, the same
        # quality); float32 elsewhere, where emulated bf16 is tens of times slower
        f"--bf16={'true' if native_dtype_name('cpu') == 'bfloat16' else 'false'}",
        f"--teacher_dtype={native_dtype_name('cpu')}",
        f"--eval_steps={args.heal_steps}",
        f"--save_steps={args.heal_steps}",
        # read only what the run can use (with room to shuffle): tokenising whole corpora costs more than 20 steps
        f"--max_train_samples={max(256, 16 * args.heal_steps * 4)}",
        "--max_eval_samples=16",
        "--logging_steps=5",
    ]


def evaluate_stage(args: argparse.Namespace, model: Path, name: str, parent: Path, out: Path, stage: str) -> Stage:
    """A model against its parent on the demo's tasks and the held-out bits per byte; two processes share the
    documents, in the precision the CPU runs natively (`shishu eval --dtype native`, recorded in results.json)."""
    task_limits = {task: round(count * args.eval_scale) for task, count in DEMO_TASKS.items()}
    task_limits |= {"offline_shakespeare": args.ppl_limit, "offline_sharegpt": args.ppl_limit}
    command = accelerate_launch(
        args.port + 1,
        *("-m", "modeling_shishu.cli", "eval", "--model", str(model), "--name", name),
        *("--baseline", str(parent), "--baseline-name", "smollm2-135m"),
        *("--suite", "offline", "--tasks", ",".join(task_limits)),
        *(word for task, limit in task_limits.items() for word in ("--task-limit", f"{task}={limit}")),
        *("--out", str(out), "--overwrite"),
    )
    return Stage(stage, command, out, env=dict(CPU_DDP_ENV))


def fidelity_stage(args: argparse.Namespace, healed: Path, parent: Path, out: Path) -> Stage:
    """KL, top-1 agreement and assistant-turn bits per byte against the parent on held-out chat; greedy answers."""
    command = shishu(
        *("fidelity", "--model", str(healed), "--name", VARIANT, "--parent", str(parent)),
        *("--parent-name", "smollm2-135m", "--conversations", str(args.fidelity_conversations)),
        *("--max-length", "768", "--out", str(out), "--overwrite"),
    )
    return Stage("fidelity", command, out)


def conversion_stages(args: argparse.Namespace, parent: Path, out: Path) -> list[Stage]:
    """The layer analysis, then the data-free and the fitted conversion of the same layout."""
    analysis, converted, data_free = out / "analysis", out / "converted", out / "converted-data-free"
    layout = ["--parent", str(parent), "--mlp-layers", "10", "--share", "pairs"]
    layout += ["--layers-from", str(analysis)] if args.layers == "analysis" else []
    layout += ["--variant", VARIANT]
    return [
        Stage("analyze", shishu("analyze", "--model", str(parent), "--k", "10", "--out", str(analysis)), analysis),
        Stage(
            "convert-data-free",
            shishu("convert", *layout, "--no-fit", "--out", str(data_free), "--overwrite"),
            data_free,
        ),
        Stage("convert", shishu("convert", *layout, "--out", str(converted), "--overwrite"), converted),
    ]


def build_stages(args: argparse.Namespace, parent: Path) -> list[Stage]:
    out = Path(args.out).resolve()
    converted, data_free, heal = out / "converted", out / "converted-data-free", out / "heal"
    healed = heal / "final"
    heal_command = accelerate_launch(
        args.port,
        *("-m", "modeling_shishu.training.distill", "--config", str(HEAL_RECIPE)),
        *heal_overrides(args, converted, parent, heal),
    )
    held_out = ["--suite", "offline", "--tasks", "offline_shakespeare,offline_sharegpt"]
    held_out += ["--limit", str(args.ppl_limit), "--overwrite"]
    before = shishu(
        *("eval", "--model", str(converted), "--name", f"{VARIANT} (fitted, not healed)"),
        *("--baseline", str(data_free), "--baseline-name", f"{VARIANT} (data-free, not healed)"),
        *held_out,
        *("--out", str(out / "eval-converted")),
    )
    bench = shishu("bench", "--model", str(healed), "--baseline", str(parent), "--quick")
    bench += ["--json", str(out / "bench.json"), "--plot", str(out / "bench.png")]
    gguf = out / f"{VARIANT}.gguf"
    stages = [
        *conversion_stages(args, parent, out),
        Stage("heal", heal_command, healed, env=dict(CPU_DDP_ENV), workdir=heal),
        evaluate_stage(args, healed, VARIANT, parent, out / "eval", "evaluate"),
        fidelity_stage(args, healed, parent, out / "fidelity"),
        Stage("evaluate-before-healing", before, out / "eval-converted"),
        Stage("benchmark", bench, out / "bench.json"),
        # f16, not bf16: llama.cpp's CPU kernels run f16 matrices fast on any x86 with F16C and on ARMv8.2,
        # bf16 ones only with AVX512-BF16; and f16 keeps 3 more mantissa bits of the float32 weights, whose
        # values all lie well inside f16's range (export-gguf refuses a tensor that does not).
        Stage(
            "export-gguf",
            shishu("export-gguf", str(healed), "--out", str(gguf), "--dtype", "f16", "--name", VARIANT, "--overwrite"),
            gguf,
        ),
    ]
    if llama_cpp_available():  # the file llama.cpp users download; the demo never compiles llama.cpp itself
        q8 = quantized_path(gguf, "q8_0")
        quantize = shishu("export-gguf", str(gguf), "--quant", "q8_0", "--out", str(q8), "--overwrite")
        stages.append(Stage("quantize-gguf", quantize, q8))
    return stages
