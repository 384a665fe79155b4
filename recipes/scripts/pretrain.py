"""Pretrain a ShishuLM from scratch on a text corpus (stage 1).

    accelerate launch --config_file recipes/accelerate_configs/cpu_ddp.yaml recipes/scripts/pretrain.py \
        --config recipes/shishu-tiny/pretrain/config.yaml [--any_field value ...]

Any field of the recipe file can be overridden on the command line. Started again with the same recipe and
output_dir, a killed run continues from its last complete checkpoint.
"""

import sys

from modeling_shishu.training.pretrain import main


if __name__ == "__main__":
    sys.exit(main())
