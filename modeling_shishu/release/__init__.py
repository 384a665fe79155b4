"""Publishing a checkpoint: its model card (`card`), the records that travel with it and `shishu push` (`push`)."""

from .card import check_card, check_repo_id, render_card, write_card
from .checkpoint_facts import checkpoint_facts, count_parameters, layout_rows
from .eval_results import build_eval_result_entries, build_eval_results, evaluation_rows, official_benchmark
from .public_records import publish_records, unpublished_paths


__all__ = [
    "build_eval_result_entries",
    "build_eval_results",
    "check_card",
    "check_repo_id",
    "checkpoint_facts",
    "count_parameters",
    "evaluation_rows",
    "layout_rows",
    "official_benchmark",
    "publish_records",
    "render_card",
    "write_card",
    "unpublished_paths",
]
