"""Small-scale replication study: ShishuLM layouts pretrained from scratch on the same tokens, compared on
held-out bits per byte, unique parameters, KV-cache bytes and decode latency.

Modules: `study` (the study file, arms and fairness checks), `tokenizer` (the study BPE, bytes per token),
`measure` (training one arm and seed, measurements), `report` (table, plot, markdown block), `run` (the whole
study and its command line, `recipes/ablations/run_study.py`).
"""

from .measure import decode_measurements, held_out_loss, held_out_text_blocks, measure_run, train_arm
from .report import RESULTS_END, RESULTS_START, aggregate, markdown_table, plot_results, write_markdown_block
from .run import main, run_study
from .study import ARM_FIELDS, Arm, Study, check_parameter_matching, extra_layers_to_match, load_arm_recipes
from .tokenizer import shakespeare_tokenizer, token_byte_lengths, train_tokenizer


__all__ = [
    "ARM_FIELDS",
    "RESULTS_END",
    "RESULTS_START",
    "Arm",
    "Study",
    "aggregate",
    "check_parameter_matching",
    "decode_measurements",
    "extra_layers_to_match",
    "held_out_loss",
    "held_out_text_blocks",
    "load_arm_recipes",
    "main",
    "markdown_table",
    "measure_run",
    "plot_results",
    "run_study",
    "shakespeare_tokenizer",
    "token_byte_lengths",
    "train_arm",
    "train_tokenizer",
    "write_markdown_block",
]
