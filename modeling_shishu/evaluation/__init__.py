"""`shishu eval`: lm-eval suites on ShishuLM checkpoints (and their baselines), written to results.json."""

from .cli import add_arguments, command_line, run
from .harness import SCORERS, EvalSettings, ModelRun, build_task_manager, evaluate_model, write_raw_outputs
from .models import ModelSpec, describe_checkpoint, resolve_model
from .offline_tasks import (
    OFFLINE_DATA_BUILDERS,
    OFFLINE_DATA_VERSION,
    OFFLINE_SHUFFLE_SEED,
    materialize_offline_tasks,
    split_into_documents,
)
from .results import (
    RESULTS_FORMAT,
    RESULTS_FORMAT_VERSION,
    build_results,
    compare,
    document_scores,
    read_results,
    suite_means,
    task_scores,
)
from .statistics import is_significant, mean_and_stderr, mean_of_tasks, paired_difference
from .suites import (
    DEFAULT_SUITE,
    HubUnreachableError,
    Suite,
    SuiteMean,
    SuiteTask,
    available_suites,
    check_hub_reachable,
    eval_root,
    load_suite,
)
from .tables import settings_line, summary_table


__all__ = [
    "DEFAULT_SUITE",
    "OFFLINE_DATA_BUILDERS",
    "OFFLINE_DATA_VERSION",
    "OFFLINE_SHUFFLE_SEED",
    "RESULTS_FORMAT",
    "RESULTS_FORMAT_VERSION",
    "SCORERS",
    "EvalSettings",
    "HubUnreachableError",
    "ModelRun",
    "ModelSpec",
    "Suite",
    "SuiteMean",
    "SuiteTask",
    "add_arguments",
    "available_suites",
    "build_results",
    "build_task_manager",
    "check_hub_reachable",
    "command_line",
    "compare",
    "describe_checkpoint",
    "document_scores",
    "eval_root",
    "evaluate_model",
    "is_significant",
    "load_suite",
    "materialize_offline_tasks",
    "mean_and_stderr",
    "mean_of_tasks",
    "paired_difference",
    "read_results",
    "resolve_model",
    "run",
    "settings_line",
    "split_into_documents",
    "suite_means",
    "summary_table",
    "task_scores",
    "write_raw_outputs",
]
