"""The main job end to end on the offline defaults (`make demo` / `shishu demo`).

    shishu demo [--out outputs/demo] [--heal-steps 80] [--eval-limit 250] [--force STAGE]

Stages, each one a documented command of its own (the demo prints it before running it):

1. fetch-parent  `shishu fetch-parent smollm2-135m`                   the real SmolLM2-135M parent, cached
2. analyze       `shishu analyze --model <parent> --k 10 --out ...`    per-layer linearity / removal cost,
                 and the set of 10 layers (5 adjacent pairs) whose attention costs least to drop
3. convert       `shishu convert --parent <parent> --mlp-layers 10 --layers-from <analysis> --share pairs ...`
                 (`--layers top`: the paper's literal choice, the top 10 layers): converted, then each MLP-only
                 block fitted to the parent on calibration text; `convert-data-free` adds `--no-fit`, for
                 comparison
4. heal          `accelerate launch --config_file recipes/accelerate_configs/cpu_ddp.yaml
                  recipes/scripts/distill.py --config recipes/shishu-smollm2-135m-instruct-m10/distill/config.yaml ...`
5. evaluate      `accelerate launch ... -m modeling_shishu.cli eval --model <healed> --baseline <parent> --suite offline
                  --limit N ...` (two processes; paired differences with their standard errors)
                 `shishu eval --model <converted> --suite offline --tasks offline_shakespeare,offline_sharegpt ...`
                 (the data-free and the fitted conversion, before healing)
   benchmark     `shishu bench --model <healed> --baseline <parent> --quick ...`
6. export-gguf   `shishu export-gguf <healed> --out <out>/shishu-smollm2-135m-instruct-m10.gguf --dtype f16 ...`: the
                 healed model for llama.cpp, next to the release folder
7. release       `shishu card <release> --results ...`: weights, remote code, tokenizer, card, plots

Re-running reuses every stage whose output is complete and whose command has not changed (a
`stage.json` next to each output records the command); once a stage runs again, every later stage
does too, since it reads that stage's output. Outputs are written by the stage commands
themselves, atomically, so an interrupted stage leaves nothing that looks complete.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .io_utils import atomic_directory, atomic_write_json


REPO_ROOT = Path(__file__).resolve().parents[1]
VARIANT = "shishu-smollm2-135m-instruct-m10"
STAGE_RECORD = "stage.json"


@dataclass
class Stage:
    """One step of the demo: a command whose complete output is `output` (a file or a folder)."""

    name: str
    command: list[str]
    output: Path
    env: dict = field(default_factory=dict)
    workdir: Path | None = None  # cleared before a re-run (defaults to `output` when it is a folder)

    def record_path(self, out: Path) -> Path:
        return out / "stages" / f"{self.name}.json"

    def is_cached(self, out: Path) -> bool:
        record = self.record_path(out)
        if not record.exists() or not self.output.exists():
            return False
        return json.loads(record.read_text()).get("command") == self.command

    def run(self, out: Path, force: bool = False) -> bool:
        """Run the stage unless its output is cached; returns whether it ran."""
        printable = " ".join(shlex.quote(part) for part in self.command)
        if self.is_cached(out) and not force:
            print(f"[demo] {self.name}: cached ({self.output})", flush=True)
            return False
        print(f"\n[demo] {self.name}: {printable}", flush=True)
        stale = self.workdir or self.output
        if stale.is_dir():
            shutil.rmtree(stale)  # left by a different command or an interrupted run: rebuild it
        start = time.perf_counter()
        log_path = out / "logs" / f"{self.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # Stream the stage's progress to the terminal and keep a copy for the record.
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env={**os.environ, **self.env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for line in process.stdout:
                sys.stdout.write(f"  | {line}")
                sys.stdout.flush()
                log.write(line)
            returncode = process.wait()
        if returncode != 0:
            raise RuntimeError(f"stage {self.name} failed (exit {returncode}); its log: {log_path}")
        if not self.output.exists():
            raise RuntimeError(f"stage {self.name} finished but wrote no {self.output}")
        seconds = time.perf_counter() - start
        atomic_write_json(
            self.record_path(out), {"command": self.command, "output": str(self.output), "seconds": round(seconds, 1)}
        )
        print(f"[demo] {self.name}: done in {seconds:.0f} s", flush=True)
        return True


def shishu(*args: str) -> list[str]:
    """The `shishu` command of this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "modeling_shishu.cli", *args]


def build_stages(args: argparse.Namespace, parent: Path) -> list[Stage]:
    out = Path(args.out).resolve()
    analysis, converted, data_free, heal = (
        out / "analysis",
        out / "converted",
        out / "converted-data-free",
        out / "heal",
    )
    healed = heal / "final"
    distill_overrides = [
        f"--student_name_or_path={converted}",
        f"--teacher_name_or_path={parent}",
        f"--output_dir={heal}",
        f"--max_steps={args.heal_steps}",
        f"--max_length={args.heal_seq_length}",
        "--per_device_train_batch_size=2",
        "--gradient_accumulation_steps=1",
        "--warmup_steps=0.1",
        f"--learning_rate={args.heal_lr}",
        # bf16 autocast and a bf16 teacher: 1.4x faster steps on a CPU with bf16 instructions, the same quality
        "--bf16=true",
        "--teacher_dtype=bfloat16",
        f"--eval_steps={args.heal_steps}",
        f"--save_steps={args.heal_steps}",
        # read only what the run can use (with room to shuffle): tokenising whole corpora costs more than 20 steps
        f"--max_train_samples={max(256, 16 * args.heal_steps * 4)}",
        "--max_eval_samples=16",
        "--logging_steps=5",
    ]
    limit = str(args.eval_limit)
    layout = [
        "--parent",
        str(parent),
        "--mlp-layers",
        "10",
        "--share",
        "pairs",
        *(["--layers-from", str(analysis)] if args.layers == "analysis" else []),
        "--variant",
        VARIANT,
    ]
    held_out = [
        "--suite",
        "offline",
        "--tasks",
        "offline_shakespeare,offline_sharegpt",
        "--limit",
        str(args.ppl_limit),
        "--dtype",
        "bfloat16",
        "--overwrite",
    ]
    return [
        Stage("analyze", shishu("analyze", "--model", str(parent), "--k", "10", "--out", str(analysis)), analysis),
        Stage(
            "convert-data-free",
            shishu("convert", *layout, "--no-fit", "--out", str(data_free), "--overwrite"),
            data_free,
        ),
        Stage("convert", shishu("convert", *layout, "--out", str(converted), "--overwrite"), converted),
        Stage(
            "heal",
            [
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--config_file",
                str(REPO_ROOT / "recipes/accelerate_configs/cpu_ddp.yaml"),
                "--main_process_port",
                str(args.port),
                str(REPO_ROOT / "recipes/scripts/distill.py"),
                "--config",
                str(REPO_ROOT / f"recipes/{VARIANT}/distill/config.yaml"),
                *distill_overrides,
            ],
            healed,
            # one thread per process: two processes share the two cores of a CPU machine
            env={"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"},
            workdir=heal,
        ),
        Stage(
            "evaluate",
            # two processes share the documents (lm-eval's data parallelism), one thread each
            [
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--config_file",
                str(REPO_ROOT / "recipes/accelerate_configs/cpu_ddp.yaml"),
                "--main_process_port",
                str(args.port + 1),
                "-m",
                "modeling_shishu.cli",
                "eval",
                "--model",
                str(healed),
                "--name",
                VARIANT,
                "--baseline",
                str(parent),
                "--baseline-name",
                "smollm2-135m",
                "--suite",
                "offline",
                "--limit",
                limit,
                "--dtype",
                "bfloat16",
                "--task-limit",
                f"offline_gsm8k={args.gsm8k_limit}",
                "--task-limit",
                f"offline_shakespeare={args.ppl_limit}",
                "--task-limit",
                f"offline_sharegpt={args.ppl_limit}",
                "--out",
                str(out / "eval"),
                "--overwrite",
            ],
            out / "eval",
            env={"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"},
        ),
        Stage(
            "evaluate-before-healing",
            shishu(
                "eval",
                "--model",
                str(converted),
                "--name",
                f"{VARIANT} (fitted, not healed)",
                "--baseline",
                str(data_free),
                "--baseline-name",
                f"{VARIANT} (data-free, not healed)",
                *held_out,
                "--out",
                str(out / "eval-converted"),
            ),
            out / "eval-converted",
        ),
        Stage(
            "benchmark",
            shishu(
                "bench",
                "--model",
                str(healed),
                "--baseline",
                str(parent),
                "--quick",
                "--json",
                str(out / "bench.json"),
                "--plot",
                str(out / "bench.png"),
            ),
            out / "bench.json",
        ),
        # f16, not bf16: llama.cpp's CPU kernels run f16 matrices fast on any x86 with F16C and on ARMv8.2,
        # bf16 ones only with AVX512-BF16; and f16 keeps 3 more mantissa bits of the float32 weights, whose
        # values all lie well inside f16's range (export-gguf refuses a tensor that does not).
        Stage(
            "export-gguf",
            shishu(
                "export-gguf",
                str(healed),
                "--out",
                str(out / f"{VARIANT}.gguf"),
                "--dtype",
                "f16",
                "--name",
                VARIANT,
                "--overwrite",
            ),
            out / f"{VARIANT}.gguf",
        ),
    ]


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
        # `shishu card` copies the results next to the card (eval_results.json)
        subprocess.run(
            shishu("card", str(tmp), "--results", str(out / "eval" / "results.json"), "--name", VARIANT),
            cwd=REPO_ROOT,
            check=True,
        )
    return release


def _score(results: dict, label: str, task: str, metric: str | None = None):
    """A model's headline score on a task, or one of the task's other metrics (e.g. "word_perplexity,none")."""
    for model in results["models"]:
        if model["label"] == label:
            score = model["scores"].get(task) or {}
            return score.get("metrics", {}).get(metric) if metric else score.get("value")
    return None


def _with_stderr(score: dict) -> str:
    return f"{score['value']:.4f}" + ("" if score["stderr"] is None else f" ± {score['stderr']:.4f}")


def evaluation_rows(results: dict, parent: str, shishu_label: str, skip: list[str]) -> list[tuple]:
    """Task scores (then the suite's means) with their standard errors, and ShishuLM minus parent on the same
    documents with the paired standard error and whether the difference exceeds two of them."""
    from .evaluation.statistics import is_significant

    models = {model["label"]: model for model in results["models"]}
    comparison = results.get("comparison") or {}
    paired = {row["task"]: row for row in comparison.get("rows", [])} | {
        row["id"]: row for row in comparison.get("means", [])
    }
    rows = []
    for key in [task for task in results["tasks"] if task not in skip] + [
        mean["id"] for mean in comparison.get("means", [])
    ]:
        p, s = (models[label]["scores"].get(key) or models[label]["means"][key] for label in (parent, shishu_label))
        if key in results["tasks"]:
            name, record, n = key, results["tasks"][key], s["n_samples"]
        else:
            name, record = s["name"], results["tasks"][s["tasks"][0]]
            n = sum(models[shishu_label]["scores"][task]["n_samples"] for task in s["tasks"])
        change = f"{s['value'] - p['value']:+.4f}"
        stderr = (paired.get(key) or {}).get("paired_stderr")
        if stderr is not None:
            change += f" (paired SE {stderr:.4f}, significant: {'yes' if is_significant(s['value'] - p['value'], stderr) else 'no'})"
        rows.append(
            (
                f"{name} ({record['metric']}, {record.get('num_fewshot', 0)}-shot, n={n})",
                _with_stderr(p),
                _with_stderr(s),
                change,
            )
        )
    return rows


def final_table(out: Path, release: Path) -> str:
    """Parent vs ShishuLM on every figure the demo measured."""
    results = json.loads((out / "eval" / "results.json").read_text())
    before = json.loads((out / "eval-converted" / "results.json").read_text())
    bench = json.loads((out / "bench.json").read_text())
    conversion = json.loads((out / "converted" / "conversion.json").read_text())
    models = bench["models"]
    shishu_role = "shishu"
    rows = [("figure", "SmolLM2-135M parent", VARIANT, "ratio / change")]

    def add(name, parent_value, shishu_value, relation="", digits=4):
        def fmt(v):
            return f"{v:,.{digits}f}" if isinstance(v, float) else (f"{v:,}" if v is not None else "-")

        rows.append((name, fmt(parent_value), fmt(shishu_value), relation))

    p_params, s_params = models["baseline"]["unique_parameters"], models[shishu_role]["unique_parameters"]
    add("unique parameters", p_params, s_params, f"{s_params / p_params - 1:+.2%}")
    p_kv, s_kv = models["baseline"]["kv_cache_bytes_per_token"], models[shishu_role]["kv_cache_bytes_per_token"]
    add(
        f"KV cache bytes / token ({models[shishu_role]['dtype']}, measured)",
        int(p_kv),
        int(s_kv),
        f"{s_kv / p_kv - 1:+.2%}",
    )
    for figure, label in [("prefill_ms", "prefill latency ratio"), ("decode_ms_per_token", "decode latency ratio")]:
        for row in bench["ratios"]:
            if row["figure"] == figure and row.get("mode") == "eager":
                rows.append((f"{label} (ctx {row['context']}, batch {row['batch']})", "", "", f"x{row['ratio']:.2f}"))
    held_out = {"offline_shakespeare": "Shakespeare", "offline_sharegpt": "ShareGPT"}
    fitted = next(m["label"] for m in before["models"] if m["role"] == "model")
    data_free = next(m["label"] for m in before["models"] if m["role"] == "baseline")
    for task, corpus in held_out.items():
        for metric, name in [(None, "bits/byte"), ("word_perplexity,none", "word perplexity")]:
            parent_value, healed_value = (
                _score(results, "smollm2-135m", task, metric),
                _score(results, VARIANT, task, metric),
            )
            add(f"held-out {corpus} {name}: parent", parent_value, None)
            add("  ... converted, data-free (not healed)", None, _score(before, data_free, task, metric))
            add("  ... converted and fitted (not healed)", None, _score(before, fitted, task, metric))
            add(
                "  ... fitted and healed",
                None,
                healed_value,
                "" if None in (parent_value, healed_value) else f"{healed_value / parent_value - 1:+.1%}",
            )
    rows += evaluation_rows(results, "smollm2-135m", VARIANT, skip=list(held_out))
    rows.append(("layers converted", "", ", ".join(map(str, conversion.get("mlp_layers", []))), ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines += [
        "",
        "scores: value ± standard error; change: ShishuLM minus parent on the same documents, significant when it "
        "exceeds 2 paired standard errors",
        "",
        f"release folder : {release}",
        f"evaluation     : {out / 'eval' / 'results.json'}",
        f"llama.cpp GGUF : {out / f'{VARIANT}.gguf'}",
        f"benchmark      : {out / 'bench.json'}",
        f"layer analysis : {out / 'analysis'}",
        f"healing run    : {out / 'heal'}",
        f"stage logs     : {out / 'logs'}",
    ]
    return "\n".join(lines)


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
        "--eval-limit",
        type=int,
        default=250,
        help="documents per BIG-bench task (default: 250, one standard error <= 0.032)",
    )
    parser.add_argument(
        "--gsm8k-limit", type=int, default=4, help="GSM8K problems (generation is slow on CPU; default: 4)"
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
    from .assets import DEFAULT_PARENT, fetch_parent

    print(f"[demo] fetch-parent: shishu fetch-parent {DEFAULT_PARENT}", flush=True)
    parent = fetch_parent(DEFAULT_PARENT)
    print(f"[demo] parent: {parent}", flush=True)
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
