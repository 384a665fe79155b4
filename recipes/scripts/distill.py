"""Heal a converted ShishuLM by distillation from its parent (stage 2).

    accelerate launch --config_file recipes/accelerate_configs/cpu_ddp.yaml recipes/scripts/distill.py \
        --config recipes/shishu-smollm2-135m-instruct-m10/distill/config.yaml [--any_field value ...]

The student is the parent converted to a ShishuLM (or `--student_name_or_path`); the loss mixes the KL
to the parent's next-token distribution with the next-token cross-entropy (`kl_weight`, `lm_weight`).
"""

import sys

from modeling_shishu.training.distill import main


if __name__ == "__main__":
    sys.exit(main())
