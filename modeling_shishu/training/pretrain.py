"""Stage 1: pretraining a ShishuLM from scratch (or continuing an existing one) on a text corpus.

    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml recipes/scripts/pretrain.py \\
        --config recipes/shishu-smollm2-135m-instruct-m10/pretrain/config.yaml

The layout comes from a Llama-family config (`config_name`, e.g. the SmolLM2-135M parent) turned into a
ShishuLM with `num_mlp_layers` / `share` / `extra_mlp_layers`; `config_overrides` resizes it.
"""

import logging
import sys

import torch

from ..loading import remote_code_consent
from ..sizes import layout_string
from .arguments import DataArguments, ModelArguments, TrainArguments, parse_recipe_args
from .data import check_tokenizer_fits_model
from .runner import (
    build_training_data,
    claim_run_directory,
    hub_repo_id,
    load_tokenizer,
    open_run,
    push_final_model,
    report_bad_input,
    resolve_checkpoint,
    train_and_publish,
)
from .trainer import CausalLMTrainer


logger = logging.getLogger(__name__)


def build_config(model_args, tokenizer):
    """The ShishuConfig to pretrain: a parent config (+ overrides) converted to the requested layout."""
    from transformers import AutoConfig

    from .. import ShishuConfig

    trust = model_args.trust_remote_code
    with remote_code_consent(model_args.config_name):
        base = AutoConfig.from_pretrained(resolve_checkpoint(model_args.config_name, trust), trust_remote_code=trust)
    fields = base.to_dict()
    overrides = dict(model_args.config_overrides)
    known = set(fields) | set(ShishuConfig.__dataclass_fields__)
    unknown = sorted(key for key in overrides if key not in known)
    if unknown:
        raise ValueError(f"config_overrides: unknown config field(s) {', '.join(unknown)}")
    if ("hidden_size" in overrides or "num_attention_heads" in overrides) and "head_dim" not in overrides:
        fields.pop("head_dim", None)  # re-derive hidden_size / num_attention_heads for the resized model
    fields.update(overrides)
    # Special token ids follow the tokenizer the model is trained with.
    fields.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    if fields.get("model_type") == ShishuConfig.model_type:
        for key in ("model_type", "transformers_version", "architectures", "auto_map", "dtype"):
            fields.pop(key, None)
        return ShishuConfig(**{k: v for k, v in fields.items() if k in ShishuConfig.__dataclass_fields__})
    if fields.get("num_hidden_layers", 0) <= model_args.num_mlp_layers:
        raise ValueError(
            f"num_mlp_layers={model_args.num_mlp_layers} leaves no attention layer in a "
            f"{fields.get('num_hidden_layers')}-layer model"
        )
    return ShishuConfig.from_llama_config(
        fields,
        num_mlp_layers=model_args.num_mlp_layers,
        share=model_args.share,
        extra_mlp_layers=model_args.extra_mlp_layers,
    )


def build_model(model_args, config=None):
    from transformers import AutoModelForCausalLM

    from .. import ShishuConfig, ShishuForCausalLM

    if model_args.model_name_or_path is not None:
        with remote_code_consent(model_args.model_name_or_path):
            model = AutoModelForCausalLM.from_pretrained(
                resolve_checkpoint(model_args.model_name_or_path, model_args.trust_remote_code),
                trust_remote_code=model_args.trust_remote_code,
                dtype=torch.float32,
                attn_implementation=model_args.attn_implementation,
            )
        if model.config.model_type != ShishuConfig.model_type:
            raise ValueError(
                f"{model_args.model_name_or_path} is a {model.config.model_type!r} model: continued pretraining "
                f"takes a ShishuLM; convert it first (`shishu convert`) or use config_name for a fresh init"
            )
    else:
        config._attn_implementation = model_args.attn_implementation
        model = ShishuForCausalLM(config)
    if model_args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


@report_bad_input("pretrain")
def main(argv: list[str] | None = None) -> int:
    model_args, data_args, train_args = parse_recipe_args((ModelArguments, DataArguments, TrainArguments), argv)
    return run(model_args, data_args, train_args)


def run(model_args, data_args, train_args) -> int:
    from accelerate.utils import set_seed

    with open_run("pretrain", train_args, model_args, data_args) as (accelerator, run_dir, checkpoint, finished):
        if finished:
            return push_final_model(accelerator, run_dir, hub_repo_id(train_args), bool(train_args.hub_private_repo))

        tokenizer = load_tokenizer(
            model_args.tokenizer_name or model_args.config_name or model_args.model_name_or_path,
            model_args.trust_remote_code,
        )
        config = None if model_args.model_name_or_path else build_config(model_args, tokenizer)
        if config is not None:
            check_tokenizer_fits_model(tokenizer, config, data_args.max_length)
        train_batches, eval_data, total_steps = build_training_data(data_args, train_args, tokenizer, accelerator)

        set_seed(train_args.seed)
        model = build_model(model_args, config)
        check_tokenizer_fits_model(tokenizer, model.config, data_args.max_length)
        logger.info(
            "ShishuLM: %s parameters, layer_types %s, share groups %s",
            f"{model.num_parameters():,}",
            layout_string(model.config),
            model.config.mlp_share_groups,
        )
        claim_run_directory(accelerator, run_dir, train_args)
        trainer = CausalLMTrainer(
            accelerator=accelerator,
            model=model,
            tokenizer=tokenizer,
            train_args=train_args,
            train_batches=train_batches,
            eval_data=eval_data,
            run_dir=run_dir,
            block_size=data_args.max_length,
            total_steps=total_steps,
        )
        return train_and_publish(trainer, checkpoint, train_args)


if __name__ == "__main__":
    sys.exit(main())
