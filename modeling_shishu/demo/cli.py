"""`shishu demo`: the main job end to end on the offline defaults (`make demo`).

    shishu demo [--out outputs/demo] [--heal-steps 80] [--eval-scale 1.0] [--force STAGE]

Stages, each a command of the package that the demo prints before running it (`pipeline.build_stages`):
fetch-parent, analyze (which 10 layers cost least to drop), convert-data-free and convert (fitted), heal
(distillation from the parent, two processes: `accelerate launch ... -m modeling_shishu.training.distill --config
<package>/demo/heal.yaml`), evaluate (healed against parent), fidelity (KL, agreement and greedy answers on held-out
chat) and evaluate-before-healing, benchmark,
export-gguf, then the release folder with its card. A re-run reuses every stage whose output is complete and
whose command is unchanged (`stages/<name>.json`); once a stage runs again, every later stage does too.
"""

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

from ..io_utils import atomic_directory
from ..precision import PRECISION_ENV, native_dtype_name
from .pipeline import VARIANT, build_stages
from .report import final_table
from .stages import shishu


# ------------------------------------------------------------------------------------------ release


def build_release(out: Path, healed: Path, converted: Path) -> Path:
    """The Hub-ready folder: healed weights, remote code, tokenizer, card with scores, plots."""
    release = out / VARIANT
    with atomic_directory(release, overwrite=True) as tmp:
        for item in healed.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        shutil.copy2(converted / "conversion.json", tmp / "conversion.json")
        plots = tmp / "plots"
        plots.mkdir()
        for source, name in [
            (out / "analysis" / "layer_analysis.png", "layer_analysis.png"),
            (out / "heal" / "loss_curve.png", "healing_loss_curve.png"),
            (out / "bench.png", "benchmark.png"),
        ]:
            if source.exists():
                shutil.copy2(source, plots / name)
        # `shishu card` copies the results next to the card (eval_results.json, fidelity.json)
        card = shishu("card", str(tmp), "--results", str(out / "eval" / "results.json"), "--name", VARIANT)
        subprocess.run([*card, "--fidelity", str(out / "fidelity" / "fidelity.json")], check=True)
    return release


# ---------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/demo", help="working folder (default: outputs/demo)")
    parser.add_argument(
        "--layers",
        choices=["analysis", "top"],
        default="analysis",
        help="which 10 layers become MLP-only: the analysis's pick (default) or the top 10 (the paper's rule)",
    )
    # 80 steps of 512 tokens: about 5 minutes here; the held-out gain per minute falls from 0.09 to 0.01 bits/byte
    # over them (docs/model_family.md), and 80 still keeps the whole demo under 20 minutes
    parser.add_argument("--heal-steps", type=int, default=80, help="distillation steps (default: 80)")
    parser.add_argument("--heal-lr", type=float, default=3e-4, help="distillation peak learning rate (default: 3e-4)")
    parser.add_argument("--heal-seq-length", type=int, default=128, help="distillation sequence length (default: 128)")
    parser.add_argument(
        "--eval-scale",
        type=float,
        default=1.0,
        help="scale the documents scored per task (default: 1.0, the counts in pipeline.DEMO_TASKS, about six "
        "minutes for both models)",
    )
    parser.add_argument(
        "--fidelity-conversations",
        type=int,
        default=24,
        help="held-out chat conversations for KL and top-1 agreement with the parent (default: 24)",
    )
    parser.add_argument(
        "--ppl-limit", type=int, default=12, help="held-out Shakespeare and ShareGPT documents (default: 12)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=29533,
        help="accelerate main process port for the healing run (the evaluation uses the next one)",
    )
    parser.add_argument("--force", nargs="*", default=[], metavar="STAGE", help="re-run these stages even if cached")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from ..assets import DEFAULT_PARENT, fetch_parent

    print(f"[demo] fetch-parent: shishu fetch-parent {DEFAULT_PARENT}", flush=True)
    parent = fetch_parent(DEFAULT_PARENT)
    print(f"[demo] parent: {parent}", flush=True)
    reason = f"set by {PRECISION_ENV}" if os.environ.get(PRECISION_ENV) else "what this CPU computes natively"
    print(f"[demo] precision: {native_dtype_name('cpu')} ({reason})", flush=True)
    stages = build_stages(args, parent)
    unknown = set(args.force) - {stage.name for stage in stages}
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages: {[stage.name for stage in stages]}")
    upstream_ran = False
    for stage in stages:
        # a stage that ran again may have changed what every later stage reads
        upstream_ran |= stage.run(out, force=upstream_ran or stage.name in args.force)
    print("\n[demo] release: writing the Hub-ready folder and its model card", flush=True)
    release = build_release(out, out / "heal" / "final", out / "converted")
    table = final_table(out, release)
    (out / "summary.txt").write_text(table + "\n")
    print("\n" + table)
    print(f"\n[demo] finished in {time.perf_counter() - started:.0f} s")
    return 0
