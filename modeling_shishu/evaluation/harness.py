"""The lm-eval run: one model through a suite with lm-eval's Python API, and lm-eval's own output files."""

import dataclasses
import gc
import logging
import math
import time
from pathlib import Path

from ..loading import remote_code_consent
from .models import ModelSpec
from .offline_tasks import materialize_offline_tasks
from .suites import Suite


logger = logging.getLogger(__name__)

# multiple-choice scorers: one forward pass per question (`shared_context`), or HFLM's own loop
SCORERS = ("shared-context", "lm-eval")


@dataclasses.dataclass
class EvalSettings:
    """How every model of a run is scored (from the command line)."""

    batch_size: str = "8"
    device: str | None = None
    dtype: str = "auto"
    limit: float | None = None
    task_limits: dict[str, int] = dataclasses.field(default_factory=dict)
    bootstrap_iters: int = 100_000
    seed: int = 1234
    apply_chat_template: bool = False
    log_samples: bool = True
    model_args: dict = dataclasses.field(default_factory=dict)
    scorer: str = "shared-context"  # or "lm-eval": HFLM's own loop for multiple-choice log-likelihoods
    trust_remote_code: bool = False  # let the checkpoint run its own code (config.json auto_map)


@dataclasses.dataclass
class ModelRun:
    """One model's lm-eval run: what it returned, how long it took, on how many processes, with which HFLM
    arguments."""

    spec: ModelSpec
    results: dict | None  # lm-eval's results (None on non-main processes)
    samples: dict | None
    seconds: float
    num_processes: int
    lm_args: dict


def _enable_cpu_data_parallel(lm) -> None:
    """lm-eval 0.4.13's HFLM shards the requests over `accelerate launch` processes only when it counts
    more than one GPU. On CPU (gloo) it would leave every process evaluating everything, silently; turn
    sharding on whenever accelerate started several processes."""
    accelerator = getattr(lm, "accelerator", None)
    if accelerator is None or accelerator.num_processes <= 1 or lm.world_size > 1:
        return
    lm._rank = accelerator.process_index
    lm._world_size = accelerator.num_processes


def build_task_manager(suite: Suite):
    from lm_eval.tasks import TaskManager

    if suite.task_templates is not None:
        task_dir = materialize_offline_tasks(suite.task_templates)
        # Only our task folder: indexing lm-eval's 14k built-in tasks costs seconds and is not needed.
        return TaskManager(include_path=str(task_dir), include_defaults=False)
    return TaskManager()


def _load_suite_tasks(task_manager, suite: Suite) -> tuple[list, dict]:
    """Build the suite's lm-eval Task/Group objects with the suite's shots; return them and the leaf tasks
    under each suite entry."""
    try:
        loaded = task_manager.load([task.task for task in suite.tasks])
    except KeyError as error:
        raise ValueError(f"suite {suite.name!r}: {error.args[0]}") from None
    objects, leaves = [], {}
    for entry in suite.tasks:
        group = loaded["groups"].get(entry.task)
        obj = group if group is not None else loaded["tasks"][entry.task]
        leaves[entry.task] = list(group.get_all_tasks()) if group is not None else [obj]
        if entry.num_fewshot is not None:
            for task in leaves[entry.task]:
                task.set_config(key="num_fewshot", value=entry.num_fewshot)
        objects.append(obj)
    return objects, leaves


def _sample_indices(leaves: dict, suite: Suite, settings: EvalSettings) -> dict[str, list[int]] | None:
    """Per-task limits as lm-eval `samples` (the first N documents of each task, like `--limit N`)."""
    if settings.limit is None and not settings.task_limits:
        return None
    indices = {}
    for entry in suite.tasks:
        for task in leaves[entry.task]:
            total = len(task.eval_docs)
            limit = settings.task_limits.get(entry.task, settings.limit)
            if limit is None:
                count = total
            elif limit < 1:
                count = max(1, math.ceil(total * limit))
            else:
                count = min(int(limit), total)
            indices[task.task_name] = list(range(count))
    return indices


def _lm_args(spec: ModelSpec, settings: EvalSettings, device: str) -> dict:
    """What HFLM receives (and what results.json records as the model arguments)."""
    return {
        "pretrained": spec.pretrained,
        "trust_remote_code": settings.trust_remote_code,
        "dtype": settings.dtype,
        "batch_size": settings.batch_size,
        "device": device,
        # lm-eval's default log-softmax runs in the model's dtype: in bfloat16 the log-likelihoods of
        # single-token choices round to steps of 1/8 and tie.
        "softmax_dtype": "float32",
        **({"revision": spec.revision} if spec.revision else {}),
        **settings.model_args,
    }


def evaluate_model(spec: ModelSpec, suite: Suite, settings: EvalSettings) -> ModelRun:
    """Run the suite on one model with lm-eval's Python API. Returns lm-eval's results on the main process."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM

    from .shared_context import SharedContextLM

    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    lm_args = _lm_args(spec, settings, device)
    start = time.perf_counter()
    try:
        with remote_code_consent(spec.pretrained):
            lm = (SharedContextLM if settings.scorer == "shared-context" else HFLM)(**lm_args)
    except OSError as error:  # transformers' "not a folder / not on the Hub / offline" errors
        raise FileNotFoundError(f"could not load {spec.pretrained}: {error}") from None
    _enable_cpu_data_parallel(lm)
    logger.info("%s: rank %d of %d, device %s", spec.label, lm.rank, lm.world_size, lm.device)

    task_manager = build_task_manager(suite)
    objects, leaves = _load_suite_tasks(task_manager, suite)
    results = lm_eval.simple_evaluate(
        model=lm,
        model_args={key: value for key, value in lm_args.items() if key not in ("batch_size", "device")},
        tasks=objects,
        task_manager=task_manager,
        batch_size=settings.batch_size,
        device=device,
        samples=_sample_indices(leaves, suite, settings),
        bootstrap_iters=settings.bootstrap_iters,
        log_samples=settings.log_samples,
        apply_chat_template=settings.apply_chat_template,
        random_seed=settings.seed,
        numpy_random_seed=settings.seed,
        torch_random_seed=settings.seed,
        fewshot_random_seed=settings.seed,
    )
    seconds = time.perf_counter() - start
    if isinstance(lm, SharedContextLM):
        logger.info("%s: shared-context scoring on rank %d: %s", spec.label, lm.rank, lm.stats)
    samples = results.pop("samples", None) if results is not None else None
    run = ModelRun(spec, results, samples, seconds, lm.world_size, lm_args)
    del lm
    gc.collect()
    return run


def write_raw_outputs(run: ModelRun, folder: Path, hub_args: dict) -> tuple[Path, list[Path]]:
    """lm-eval's own files, through its EvaluationTracker (which also handles the optional Hub logging)."""
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(folder / "results.json"), **hub_args)
    tracker.general_config_tracker.log_experiment_args(
        model_source="hf",
        model_args=run.lm_args,
        system_instruction=None,
        chat_template=None,
        fewshot_as_multiturn=False,
    )
    tracker.save_results_aggregated(results=run.results, samples=run.samples)
    if run.samples is not None:
        for task_name in run.results["configs"]:
            tracker.save_results_samples(task_name=task_name, samples=run.samples[task_name])
    if hub_args.get("push_results_to_hub") or hub_args.get("push_samples_to_hub"):
        tracker.recreate_metadata_card()
    # The tracker logs and swallows write errors; an incomplete output folder must not look complete.
    written = sorted(folder.glob("results_*.json"))
    samples = sorted(folder.glob("samples_*.jsonl"))
    if len(written) != 1 or (run.samples is not None and len(samples) != len(run.results["configs"])):
        raise RuntimeError(f"lm-eval did not write its results/samples into {folder}")
    return written[0], samples
