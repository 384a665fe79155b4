"""`shishu eval`: run an lm-eval suite on a checkpoint (and optionally its baseline) and write results.json.

    shishu eval --model DIR|HUB_ID|smollm2-135m [--baseline DIR|HUB_ID] --suite offline --out DIR \\
        [--limit N] [--task-limit TASK=N ...] [--batch-size 8] [--device cpu] [--dtype auto]

    # data parallel: lm-eval shards the requests over the processes accelerate starts (on CPU: ACCELERATE_USE_CPU=1)
    accelerate launch --multi_gpu --num_processes 8 -m modeling_shishu.cli eval --model ... --suite ...

`--out` receives results.json, summary.md and lm-eval's own files, all at once when the run completes
(described in `evaluation/data/README.md`).
"""

import argparse
import contextlib
import datetime
import logging
import os
import re
import shlex
import sys
import time
from pathlib import Path

from ..io_utils import atomic_directory, atomic_write_json, atomic_write_text, claim_output
from ..loading import add_trust_remote_code_argument
from ..precision import default_device, native_dtype_name
from . import harness
from .harness import SCORERS, EvalSettings
from .models import ModelSpec, resolve_model
from .offline_tasks import materialize_offline_tasks
from .results import build_results
from .suites import DEFAULT_SUITE, HubUnreachableError, Suite, check_hub_reachable, load_suite
from .tables import settings_line, summary_table


_UNSAFE_FOR_PATHS = re.compile(r"[^A-Za-z0-9._-]+")


def _parse_limit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"limit must be a number, got {text!r}") from None
    if value <= 0 or (value >= 1 and value != int(value)):
        raise argparse.ArgumentTypeError(
            f"limit must be a whole number of examples >= 1 or a fraction in (0, 1), got {text}"
        )
    return int(value) if value >= 1 else value


def _parse_task_limit(text: str) -> tuple[str, int]:
    task, _, count = text.partition("=")
    if not task or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"--task-limit takes TASK=N with N >= 1, got {text!r}")
    return task, int(count)


def _parse_batch_size(text: str) -> str:
    if not (text.isdigit() and int(text) >= 1) and not re.match(r"^auto(:\d+)?$", text):
        raise argparse.ArgumentTypeError(f"batch size must be a positive integer, 'auto' or 'auto:N', got {text!r}")
    return text


def _add_inputs_and_outputs(parser: argparse.ArgumentParser) -> None:
    """The models, the suite and the output folder."""
    parser.add_argument(
        "--model",
        required=True,
        metavar="DIR|HUB_ID",
        help="checkpoint folder, Hub id, or offline parent name (smollm2-135m)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR|HUB_ID",
        help="also evaluate this model (e.g. the parent) and print both side by side with the differences",
    )
    parser.add_argument(
        "--suite",
        default=DEFAULT_SUITE,
        help="suite name (suites/*.yaml in modeling_shishu/evaluation/data/, or in $SHISHU_EVAL_DIR) or a suite YAML "
        f"path (default: {DEFAULT_SUITE})",
    )
    parser.add_argument("--tasks", help="comma-separated subset of the suite's tasks")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (written all at once when the run completes)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """How much is scored, and where and how fast it runs."""
    parser.add_argument(
        "--limit", type=_parse_limit, help="score only the first N documents of every task (or a fraction < 1)"
    )
    parser.add_argument(
        "--task-limit",
        type=_parse_task_limit,
        action="append",
        default=[],
        metavar="TASK=N",
        help="per-task limit overriding --limit (repeatable)",
    )
    parser.add_argument(
        "--batch-size",
        type=_parse_batch_size,
        default="8",
        help="lm-eval batch size: N, 'auto' or 'auto:N' (default: 8)",
    )
    parser.add_argument(
        "--device",
        help="cuda, cuda:0, cpu, mps, ... (default: cuda if available, else cpu; accelerate launch places each "
        "process)",
    )
    parser.add_argument(
        "--dtype",
        default="native",
        help="native (default: bfloat16 where the device computes it natively, else float32; recorded in "
        "results.json), auto (the checkpoint's), bfloat16, float16 or float32",
    )


def _add_loading_arguments(parser: argparse.ArgumentParser) -> None:
    """Revisions, labels and the loading settings HFLM receives."""
    parser.add_argument("--revision", help="Hub revision of --model")
    parser.add_argument("--baseline-revision", help="Hub revision of --baseline")
    parser.add_argument("--name", help="label of --model in the results (default: the folder or repository name)")
    parser.add_argument("--baseline-name", help="label of --baseline in the results")
    parser.add_argument(
        "--model-args",
        default="",
        metavar="K=V,...",
        help="extra HFLM arguments, e.g. attn_implementation=flash_attention_2,parallelize=True",
    )
    add_trust_remote_code_argument(parser)


def _add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """Prompt format, seeds, standard errors, samples and the multiple-choice scorer."""
    parser.add_argument(
        "--apply-chat-template", action="store_true", help="format prompts with the tokenizer's chat template"
    )
    parser.add_argument(
        "--bootstrap-iters",
        type=int,
        default=100_000,
        help="bootstrap iterations for stderrs of non-mean metrics (lm-eval's default: 100000)",
    )
    parser.add_argument(
        "--seed", type=int, default=1234, help="seed for Python, numpy, torch and the few-shot sampler (default: 1234)"
    )
    parser.add_argument(
        "--no-samples",
        action="store_true",
        help="do not write per-sample outputs (then no per-document scores and no paired standard errors)",
    )
    parser.add_argument(
        "--scorer",
        choices=SCORERS,
        default="shared-context",
        help="multiple-choice log-likelihoods: shared-context (one forward pass per question, lm-eval's "
        "numbers; default) or lm-eval (HFLM's loop, one pass per choice)",
    )


def _add_hub_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """lm-eval's own Hub logging of results and samples."""
    hub = parser.add_argument_group("lm-eval Hub logging (optional; needs HF_TOKEN)")
    hub.add_argument("--hub-results-org", default="", help="organisation that receives the results/details datasets")
    hub.add_argument(
        "--details-repo-name",
        default="",
        help="dataset name for per-sample details (lm-eval's default: lm-eval-results)",
    )
    hub.add_argument(
        "--push-samples-to-hub",
        action="store_true",
        help="upload the per-sample outputs with lm-eval's EvaluationTracker",
    )
    hub.add_argument("--push-results-to-hub", action="store_true", help="upload lm-eval's aggregated results")
    hub.add_argument("--public-repo", action="store_true", help="make those datasets public")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # in this order: `command_line` writes the options of a run in the order they are declared
    _add_inputs_and_outputs(parser)
    _add_runtime_arguments(parser)
    _add_loading_arguments(parser)
    _add_scoring_arguments(parser)
    _add_hub_logging_arguments(parser)


def command_line(args: argparse.Namespace, num_processes: int = 1) -> str:
    """The command that repeats this run: every option that differs from its default (the suite always),
    behind the `accelerate launch` line when the run was data parallel."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    words = ["shishu", "eval"]
    if num_processes > 1:
        words = [
            "accelerate",
            "launch",
            "--multi_gpu",
            "--num_processes",
            str(num_processes),
            "-m",
            "modeling_shishu.cli",
            "eval",
        ]
        if os.environ.get("ACCELERATE_USE_CPU"):
            words.insert(0, f"ACCELERATE_USE_CPU={os.environ['ACCELERATE_USE_CPU']}")
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default and action.dest != "suite":
            continue
        option = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            words.append(option)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                words += [option, "=".join(map(str, item)) if isinstance(item, tuple) else str(item)]
        else:
            words += [option, str(value)]
    return shlex.join(words)


def _settings(args: argparse.Namespace, suite: Suite) -> EvalSettings:
    """The run's settings from the command line, checked against the suite."""
    from lm_eval.utils import simple_parse_args_string

    task_limits = dict(args.task_limit)
    unknown = [task for task in task_limits if task not in {entry.task for entry in suite.tasks}]
    if unknown:
        raise ValueError(f"--task-limit names tasks not in the suite: {', '.join(unknown)}")
    if args.bootstrap_iters < 0:
        raise ValueError(f"--bootstrap-iters must be >= 0, got {args.bootstrap_iters}")
    settings = EvalSettings(
        batch_size=args.batch_size,
        device=args.device,
        dtype=native_dtype_name(args.device or default_device()) if args.dtype == "native" else args.dtype,
        limit=args.limit,
        task_limits=task_limits,
        bootstrap_iters=args.bootstrap_iters,
        seed=args.seed,
        apply_chat_template=args.apply_chat_template,
        log_samples=not args.no_samples,
        model_args=simple_parse_args_string(args.model_args) if args.model_args else {},
        scorer=args.scorer,
    )
    # lm-eval's own spelling of the consent (--model-args trust_remote_code=True) counts as well.
    settings.trust_remote_code = args.trust_remote_code or settings.model_args.get("trust_remote_code") is True
    return settings


def _model_specs(args: argparse.Namespace, trust_remote_code: bool) -> list[ModelSpec]:
    specs = [resolve_model(args.model, "model", args.revision, args.name, trust_remote_code)]
    if args.baseline:
        specs.append(
            resolve_model(args.baseline, "baseline", args.baseline_revision, args.baseline_name, trust_remote_code)
        )
        if specs[0].label == specs[1].label:
            raise ValueError(
                f"--model and --baseline are both labelled {specs[0].label!r}; set --name / --baseline-name"
            )
    return specs


def _hub_args(args: argparse.Namespace) -> dict:
    """lm-eval EvaluationTracker's Hub logging settings."""
    hub_args = {
        "hub_results_org": args.hub_results_org,
        "details_repo_name": args.details_repo_name,
        "push_samples_to_hub": args.push_samples_to_hub,
        "push_results_to_hub": args.push_results_to_hub,
        "public_repo": args.public_repo,
        "token": os.environ.get("HF_TOKEN", ""),
    }
    if (args.push_samples_to_hub or args.push_results_to_hub) and not hub_args["token"]:
        raise ValueError("--push-samples-to-hub / --push-results-to-hub need a Hub token in HF_TOKEN")
    return hub_args


def run(args: argparse.Namespace) -> int:
    started = datetime.datetime.now(datetime.timezone.utc)
    wall_start = time.perf_counter()
    suite = load_suite(args.suite).select(
        [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    )
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    settings = _settings(args, suite)
    if suite.needs_hub:
        try:
            check_hub_reachable(suite)
        except HubUnreachableError as error:
            print(f"shishu eval: error: {error}", file=sys.stderr)
            return 2
    specs = _model_specs(args, settings.trust_remote_code)
    hub_args = _hub_args(args)

    # Only the main process writes the outputs (lm-eval gathers the other ranks' results on it), so only
    # it claims them; the claim is taken before any model is loaded.
    is_main = int(os.environ.get("RANK", "0")) == 0
    with claim_output(out, overwrite=args.overwrite) if is_main else contextlib.nullcontext():
        return _evaluate_and_write(args, suite, settings, specs, hub_args, out, started, wall_start)


def _evaluate_and_write(args, suite, settings, specs, hub_args, out: Path, started, wall_start) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if suite.task_templates is not None:
        materialize_offline_tasks(suite.task_templates)  # once, before any model is loaded
    runs = [harness.evaluate_model(spec, suite, settings) for spec in specs]
    if runs[0].results is None:
        return 0  # not the main process: lm-eval gathered everything on rank 0, which writes the outputs

    with atomic_directory(out, overwrite=args.overwrite) as tmp:
        raw_files = {}
        for run_ in runs:
            # A label may hold spaces or parentheses; its folder name keeps only path-safe characters.
            safe_label = _UNSAFE_FOR_PATHS.sub("_", run_.spec.label).strip("_") or "model"
            folder = tmp / "lm_eval" / f"{len(raw_files)}-{safe_label}"
            results_file, samples_files = harness.write_raw_outputs(run_, folder, hub_args)
            raw_files[run_.spec.label] = {
                "results": str(results_file.relative_to(tmp)),
                "samples": [str(path.relative_to(tmp)) for path in samples_files],
            }
        command = command_line(args, runs[0].num_processes)
        results = build_results(runs, suite, settings, command, started, time.perf_counter() - wall_start, raw_files)
        atomic_write_json(tmp / "results.json", results)
        table = summary_table(results)
        atomic_write_text(tmp / "summary.md", f"{settings_line(results)}\n\n{table}\n")
    print(settings_line(results))
    print(table)
    print(f"wrote {out / 'results.json'}")
    return 0
