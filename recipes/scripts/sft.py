"""Instruction-tune a ShishuLM with TRL's SFTTrainer on chat data, full or LoRA (stage 3).

    accelerate launch --config_file recipes/accelerate_configs/cpu_ddp.yaml recipes/scripts/sft.py \
        --config recipes/shishu-smollm2-135m-instruct-m10/sft/config.yaml [--any_field value ...]

Fields: SFTScriptArguments (data, run folder), trl.SFTConfig (trainer), trl.ModelConfig (model, LoRA).
The offline default data (ShareGPT) is licensed for research only.
"""

import sys

from modeling_shishu.training.sft import main


if __name__ == "__main__":
    sys.exit(main())
