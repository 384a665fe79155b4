"""Training recipes for ShishuLM: pretraining, healing by distillation, instruction tuning.

Each stage is a module with a `main(argv)` entry point, launched through the thin scripts in
`recipes/scripts/` with `accelerate launch` (one GPU, many GPUs, or two CPU processes):

    accelerate launch --config_file recipes/accelerate_configs/cpu_ddp.yaml recipes/scripts/pretrain.py \\
        --config recipes/shishu-tiny/pretrain/config.yaml

Modules: `arguments` (dataclasses + YAML/CLI parser), `data` (loading, packing, data order),
`trainer` (the accelerate loop), `checkpointing` (run folders, atomic checkpoints, exact resume),
`metrics` (MFU, metrics.jsonl, loss-curve PNG), `runner` (what the stages share: the run folder, data,
errors), `pretrain`, `distill`, `sft`, and `ablations` (the small-scale layout study).
Needs the `train` extra: `pip install -e ".[train,plot]"`.
"""

from .arguments import DataArguments, DistillArguments, ModelArguments, TrainArguments, parse_recipe_args


__all__ = [
    "DataArguments",
    "DistillArguments",
    "ModelArguments",
    "TrainArguments",
    "parse_recipe_args",
]
