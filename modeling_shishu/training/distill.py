"""Stage 2: healing a converted ShishuLM by distillation from its parent.

    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml recipes/scripts/distill.py \\
        --config recipes/shishu-smollm2-135m-instruct-m10/distill/config.yaml

The student is the parent converted to a ShishuLM (`modeling_shishu.conversion.convert.convert_model`: top
`num_mlp_layers` layers MLP-only, adjacent pairs sharing), or a checkpoint given as
`student_name_or_path`; the teacher is the unchanged parent. The loss mixes, with weights from the
recipe, the KL divergence from the teacher's next-token distribution to the student's (both softened by
`temperature`, scaled by T^2) and the usual next-token cross-entropy on the data.
"""

import logging
import sys

import torch
import torch.nn.functional as F

from ..loading import remote_code_consent
from ..precision import default_device, native_dtype
from .arguments import DataArguments, DistillArguments, TrainArguments, parse_recipe_args
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
from .trainer import CausalLMTrainer, shifted_token_losses


logger = logging.getLogger(__name__)


def distillation_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Per-position `T^2 * KL(softmax(teacher / T) || softmax(student / T))`, shape `(batch, seq)`, float32."""
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="none").sum(-1)
    return kl * temperature**2


class DistillationTrainer(CausalLMTrainer):
    """`CausalLMTrainer` with a frozen teacher: loss = kl_weight * KL + lm_weight * cross-entropy."""

    stage = "distill"

    def __init__(self, *, teacher, distill_args, **kwargs):
        super().__init__(**kwargs)
        self.distill_args = distill_args
        # The teacher is never trained: not wrapped for DDP/FSDP, a full copy on every device.
        self.teacher = teacher.to(self.accelerator.device).eval().requires_grad_(False)

    def _teacher_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(input_ids=input_ids, use_cache=False).logits

    def compute_loss(self, model, input_ids):
        args = self.distill_args
        student_logits = model(input_ids=input_ids, use_cache=False).logits
        lm_loss = shifted_token_losses(student_logits, input_ids).mean()
        kl = distillation_kl(student_logits, self._teacher_logits(input_ids), args.temperature).mean()
        loss = args.kl_weight * kl + args.lm_weight * lm_loss
        return loss, {"lm_loss": lm_loss, "kl": kl}

    def evaluation_terms(self, model, input_ids):
        student_logits = model(input_ids=input_ids, use_cache=False).logits
        return {
            "eval_loss": shifted_token_losses(student_logits, input_ids).mean(dim=1),
            "eval_kl": distillation_kl(student_logits, self._teacher_logits(input_ids), 1.0).mean(dim=1),
        }


def _teacher_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return native_dtype(default_device())
    return getattr(torch, name)


def load_float32_model(name_or_path: str, distill_args):
    """A teacher or student in float32, running a folder's own code only with `trust_remote_code`."""
    from transformers import AutoModelForCausalLM

    trust = distill_args.trust_remote_code
    with remote_code_consent(name_or_path):
        return AutoModelForCausalLM.from_pretrained(
            resolve_checkpoint(name_or_path, trust),
            dtype=torch.float32,
            attn_implementation=distill_args.attn_implementation,
            trust_remote_code=trust,
        )


def build_student_and_teacher(distill_args):
    """Load the teacher in float32, convert it (or load the given student), then cast the teacher."""
    from ..conversion.convert import (
        check_parent_config,
        convert_model,
        in_process_conversion_record,
        read_conversion_record,
    )

    teacher = load_float32_model(distill_args.teacher_name_or_path, distill_args)
    if distill_args.student_name_or_path is not None:
        student = load_float32_model(distill_args.student_name_or_path, distill_args)
        if student.config.model_type != "shishu":
            raise ValueError(
                f"student {distill_args.student_name_or_path} is a {student.config.model_type!r} model, not a ShishuLM"
            )
        student.conversion_record = read_conversion_record(student.name_or_path)
    else:
        check_parent_config(teacher.config, type(teacher).__name__)
        student = convert_model(
            teacher,
            num_mlp_layers=distill_args.num_mlp_layers,
            mlp_layers=distill_args.mlp_layers,
            share=distill_args.share,
            extra_mlp_layers=distill_args.extra_mlp_layers,
            pair_init=distill_args.pair_init,
        )
        student.conversion_record = in_process_conversion_record(
            distill_args.teacher_name_or_path,
            teacher,
            student,
            explicit_layers=distill_args.mlp_layers is not None,
            share=distill_args.share,
            pair_init=distill_args.pair_init,
            extra_mlp_layers=distill_args.extra_mlp_layers,
        )
    if student.config.vocab_size != teacher.config.vocab_size:
        raise ValueError(
            f"student vocab_size {student.config.vocab_size} differs from the teacher's {teacher.config.vocab_size}: "
            f"logit distillation needs one vocabulary"
        )
    student.train()
    if distill_args.gradient_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return student, teacher.to(_teacher_dtype(distill_args.teacher_dtype))


@report_bad_input("distill")
def main(argv: list[str] | None = None) -> int:
    distill_args, data_args, train_args = parse_recipe_args((DistillArguments, DataArguments, TrainArguments), argv)
    return run(distill_args, data_args, train_args)


def run(distill_args, data_args, train_args) -> int:
    from accelerate.utils import set_seed

    with open_run("distill", train_args, distill_args, data_args) as (accelerator, run_dir, checkpoint, finished):
        if finished:
            return push_final_model(accelerator, run_dir, hub_repo_id(train_args), bool(train_args.hub_private_repo))

        tokenizer = load_tokenizer(
            distill_args.tokenizer_name or distill_args.teacher_name_or_path, distill_args.trust_remote_code
        )
        set_seed(train_args.seed)
        student, teacher = build_student_and_teacher(distill_args)
        check_tokenizer_fits_model(tokenizer, student.config, data_args.max_length)
        train_batches, eval_data, total_steps = build_training_data(data_args, train_args, tokenizer, accelerator)
        logger.info(
            "student: %s parameters (teacher %s), layer_types %s",
            f"{student.num_parameters():,}",
            f"{teacher.num_parameters():,}",
            student.config.layer_types,
        )
        claim_run_directory(accelerator, run_dir, train_args)
        trainer = DistillationTrainer(
            teacher=teacher,
            distill_args=distill_args,
            accelerator=accelerator,
            model=student,
            tokenizer=tokenizer,
            train_args=train_args,
            train_batches=train_batches,
            eval_data=eval_data,
            run_dir=run_dir,
            block_size=data_args.max_length,
            total_steps=total_steps,
        )
        if student.conversion_record is not None:
            # the healed model keeps the record of its layout: the card reads it
            trainer.carried_files["conversion.json"] = student.conversion_record
        return train_and_publish(trainer, checkpoint, train_args)


if __name__ == "__main__":
    sys.exit(main())
