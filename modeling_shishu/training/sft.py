"""Stage 3: instruction tuning a ShishuLM with TRL's `SFTTrainer` on chat data (full or LoRA), ChatML.

    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml recipes/scripts/sft.py \\
        --config recipes/shishu-smollm2-135m-instruct-m10/sft/config.yaml

Rows are conversations `{"messages": [{"role": ..., "content": ...}, ...]}`. The offline default is the
ShareGPT package from the registry (RESEARCH ONLY: conversations shared from ChatGPT, no licence for
redistribution or commercial use); on the Hub use any `messages` dataset. The tokenizer's chat template
is used; a tokenizer without one gets ChatML (`<|im_start|>role ... <|im_end|>`), with `<|im_end|>` as its eos so
the released model stops after its reply. With `assistant_only_loss` (TRL's field; the recipes set it) only the
assistant's replies and their `<|im_end|>` are in the loss: a ChatML template gets the `{% generation %}`
markers TRL reads (`with_generation_markers`), any other template comes from `chat_template_path`.

Besides TRL's own outputs, the run folder follows the other stages: `run.json` (refuses a different
run), atomic `checkpoint-<step>/` folders (Trainer checkpoints; a run continues from the last one on its own,
or from `resume_from_checkpoint`),
`metrics.jsonl`, `loss_curve.png`, and `final/` (Hub-ready; with LoRA, the adapter merged into the base
model, while `adapter/` keeps the adapter alone).
"""

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..io_utils import atomic_directory, atomic_write_json
from ..release.push import check_repo_id
from ..sizes import training_flops_per_token
from .arguments import RecipeParser, fingerprint_fields, normalize_resume_from_checkpoint
from .checkpointing import apply_default_permissions, load_model_weights, prepare_for_hub
from .data import check_tokenizer_fits_model
from .metrics import MetricsLogger, detect_peak_flops
from .run_directory import CHECKPOINT_PREFIX, FINAL_DIR, SUMMARY_FILE, RunDirectory, remove_tree
from .runner import load_tokenizer, open_run_directory, push_final_model, report_bad_input, resolve_checkpoint
from .trainer import has_accelerator


logger = logging.getLogger(__name__)

# PEFT target names of a Llama block; ShishuLM keeps them (MLP-only blocks have only the last three).
LLAMA_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# One ChatML turn, written as SmolLM2-Instruct's template writes it, and the same turn with the assistant's
# reply (up to and including <|im_end|>, so the model learns to stop) inside {% generation %} markers: what
# TRL's `assistant_only_loss` reads to mask everything else out of the loss. The markers render as nothing.
_CHATML_TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
_CHATML_TURN_MARKED = (
    "{% if message['role'] == 'assistant' %}{{'<|im_start|>assistant\n'}}{% generation %}"
    "{{message['content'] + '<|im_end|>'}}{% endgeneration %}{{'\n'}}{% else %}" + _CHATML_TURN + "{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}" + _CHATML_TURN_MARKED + "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ADAPTER_DIR = "adapter"
OFFLINE_CHAT_CORPORA = ("sharegpt",)
_STAGING = ".checkpoint.tmp-staging"  # matches RunDirectory's stale-temporary pattern


@dataclass
class SFTScriptArguments:
    """Data and run-folder settings of the SFT stage (model settings: trl.ModelConfig; trainer: trl.SFTConfig)."""

    dataset_name: str | None = field(
        default="sharegpt",
        metadata={
            "help": "'sharegpt' (offline default; research only), a Hub dataset id, or a loader name (json, "
            "parquet) used with train_files."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    train_files: list[str] | None = field(default=None, metadata={"help": "Local .json/.jsonl/.parquet files."})
    eval_files: list[str] | None = field(default=None, metadata={"help": "Local held-out files."})

    dataset_train_split: str = field(default="train", metadata={"help": "Training split."})
    dataset_test_split: str | None = field(default=None, metadata={"help": "Held-out split (Hub datasets)."})
    messages_column: str = field(default="messages", metadata={"help": "Column holding the conversations."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N conversations."})
    num_eval_samples: int = field(
        default=0, metadata={"help": "sharegpt: conversations after the training ones held out for evaluation."}
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Default: the model's tokenizer."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a previous run in output_dir."})
    merge_adapter: bool = field(default=True, metadata={"help": "LoRA: write final/ as the merged full model."})
    stop_after_steps: int | None = field(
        default=None,
        metadata={"help": "Stop after this step without finishing the run, as if the job were killed (resume tests)."},
    )

    def __post_init__(self):
        if self.dataset_name is None and not self.train_files:
            raise ValueError("set dataset_name or train_files")
        if self.num_eval_samples < 0:
            raise ValueError(f"num_eval_samples must be >= 0, got {self.num_eval_samples}")


# ----------------------------------------------------------------------------------------------- data


def load_conversations(script_args):
    """(train, eval or None) `datasets.Dataset`s with one `messages` column."""
    import datasets

    column = script_args.messages_column
    if script_args.train_files:
        for path in script_args.train_files + (script_args.eval_files or []):
            if not Path(path).is_file():
                raise FileNotFoundError(f"no such data file: {path}")
            if Path(path).stat().st_size == 0:  # `datasets` cannot infer a schema from nothing
                raise ValueError(f"{path} is empty: no conversations to train on")
        loader = _file_loader(script_args.train_files + (script_args.eval_files or []))
        train = datasets.load_dataset(loader, data_files={"train": script_args.train_files}, split="train")
        evaluation = (
            datasets.load_dataset(loader, data_files={"eval": script_args.eval_files}, split="eval")
            if script_args.eval_files
            else None
        )
    elif script_args.dataset_name in OFFLINE_CHAT_CORPORA:
        from .. import assets

        limit = None
        if script_args.max_train_samples is not None:
            limit = script_args.max_train_samples + script_args.num_eval_samples
        conversations = assets.sharegpt_conversations(limit=limit)
        split = len(conversations) - script_args.num_eval_samples
        train = datasets.Dataset.from_dict({column: conversations[:split]})
        evaluation = (
            datasets.Dataset.from_dict({column: conversations[split:]}) if script_args.num_eval_samples else None
        )
    else:
        train = datasets.load_dataset(
            script_args.dataset_name, script_args.dataset_config, split=script_args.dataset_train_split
        )
        evaluation = None
        if script_args.dataset_test_split:
            evaluation = datasets.load_dataset(
                script_args.dataset_name, script_args.dataset_config, split=script_args.dataset_test_split
            )
    if script_args.max_train_samples is not None and len(train) > script_args.max_train_samples:
        train = train.select(range(script_args.max_train_samples))
    return _clean(train, column, "training data"), (
        _clean(evaluation, column, "held-out data") if evaluation else None
    )


def _file_loader(files: list[str]) -> str:
    missing = [f for f in files if not Path(f).exists()]
    if missing:
        raise FileNotFoundError(f"data file(s) not found: {', '.join(missing)}")
    suffixes = {Path(f).suffix.lower() for f in files}
    if suffixes <= {".json", ".jsonl"}:
        return "json"
    if suffixes == {".parquet"}:
        return "parquet"
    raise ValueError(f"chat data files must be .json/.jsonl or .parquet, got {sorted(suffixes)}")


def _clean(dataset, column: str, name: str):
    if column not in dataset.column_names:
        raise ValueError(
            f"{name} has no column {column!r} (columns: {', '.join(dataset.column_names)}); set messages_column"
        )
    if column != "messages":
        dataset = dataset.rename_column(column, "messages")
    dataset = dataset.select_columns(["messages"])

    def usable(row):
        messages = row["messages"]
        return isinstance(messages, list) and any(
            isinstance(m, dict) and m.get("role") == "assistant" and m.get("content") for m in messages
        )

    dataset = dataset.filter(usable)
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty: no conversation with an assistant turn in column {column!r}")
    return dataset


def with_generation_markers(chat_template: str) -> str:
    """`chat_template` with the assistant's replies inside `{% generation %}` markers (same rendering).

    A template that has them is returned as it is; a ChatML template written as SmolLM2-Instruct's (a default
    system prompt included) gets them; any other is refused, naming `chat_template_path`."""
    if "{% generation %}" in chat_template or "{%- generation %}" in chat_template:
        return chat_template
    if chat_template.count(_CHATML_TURN) != 1:
        raise ValueError(
            "assistant_only_loss needs a chat template that marks the assistant's replies with {% generation %}: "
            "set chat_template_path to one (TRL ships *_training.jinja templates), or assistant_only_loss: false"
        )
    return chat_template.replace(_CHATML_TURN, _CHATML_TURN_MARKED)


# ------------------------------------------------------------------------------------------- trainer


class MetricsCallback(TrainerCallback):
    """Writes the Trainer's logs to `metrics.jsonl` (loss, lr, tokens/s, MFU on a GPU) and the loss PNG."""

    def __init__(self, run_dir: Path, flops_per_token: float, peak_flops: float | None, world_size: int):
        self.metrics = MetricsLogger(run_dir)
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.world_size = world_size
        self._last = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.metrics.truncate_after(state.global_step)
        self._last = (time.perf_counter(), 0)  # TRL's token counter starts at 0 in every process

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step}
        for key, value in logs.items():
            record["lr" if key == "learning_rate" else key] = value
        if "num_tokens" in logs and self._last is not None:
            now, tokens = time.perf_counter(), logs["num_tokens"]
            seconds = now - self._last[0]
            if seconds > 0 and tokens > self._last[1]:
                record["tokens_per_second"] = (tokens - self._last[1]) / seconds
                if self.peak_flops:
                    record["mfu"] = (
                        self.flops_per_token * record["tokens_per_second"] / (self.peak_flops * self.world_size)
                    )
            self._last = (now, tokens)
        self.metrics.log(record)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.metrics.plot(title="sft")

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.metrics.plot(title="sft")


class StopAfterStepsCallback(TrainerCallback):
    """Ends training after `stop_after_steps` (after that step's checkpoint, if any), like a kill would."""

    def __init__(self, stop_after_steps: int):
        self.stop_after_steps = stop_after_steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.stop_after_steps:
            control.should_training_stop = True
        return control


def _atomic_sft_trainer_class():
    from trl import SFTTrainer

    class AtomicCheckpointSFTTrainer(SFTTrainer):
        """`SFTTrainer` whose checkpoints appear atomically: written into a staging folder by every rank,
        then renamed to `checkpoint-<step>` by the main process, which then keeps the last
        `save_total_limit` checkpoints of `run_dir`."""

        run_dir: RunDirectory

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # transformers 5.23 reads a full-model checkpoint's config.json with the base PreTrainedConfig
            # (only to compare versions), and that class's validation rejects the "mlp" layer type. Load the
            # weights the way it would (safetensors, non-strict for tied weights) without that read.
            model = self.model if model is None else model
            folder = Path(resume_from_checkpoint)
            has_weights = any(
                (folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")
            )
            sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled
            if not (folder / "config.json").is_file() or not has_weights or sharded:
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            result = model.load_state_dict(load_model_weights(folder), strict=False)
            tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
            if set(result.missing_keys) - tied or result.unexpected_keys:
                raise ValueError(
                    f"checkpoint {folder} does not fit the model: missing {sorted(set(result.missing_keys) - tied)}, "
                    f"unexpected {sorted(result.unexpected_keys)}"
                )

        def _save_checkpoint(self, model, trial):
            run_dir = Path(self.args.output_dir)
            staging = run_dir / _STAGING
            name = f"{CHECKPOINT_PREFIX}{self.state.global_step}"
            self.args.output_dir = str(staging)
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.args.output_dir = str(run_dir)
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                final = run_dir / name
                if final.exists():
                    remove_tree(final)
                apply_default_permissions(staging / name)
                os.rename(staging / name, final)
                shutil.rmtree(staging)  # what is left: TRL's model card for the staging folder
                self.run_dir.rotate(self.args.save_total_limit)
            self.accelerator.wait_for_everyone()

    return AtomicCheckpointSFTTrainer


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    from trl import ModelConfig, SFTConfig

    parser = RecipeParser((SFTScriptArguments, SFTConfig, ModelConfig))
    if not has_accelerator():
        # No GPU: run (and join a multi-process launch) on the CPU, in float32 unless the recipe says otherwise.
        parser.set_defaults(use_cpu=True, bf16=False)
    return parser.parse_recipe(argv)


@report_bad_input("sft")
def main(argv: list[str] | None = None) -> int:
    script_args, training_args, model_args = parse_args(argv)
    return run(script_args, training_args, model_args)


def run(script_args, training_args, model_args) -> int:
    from accelerate import PartialState
    from transformers import AutoConfig

    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    model_path, repo_id = prepare_arguments(script_args, training_args, model_args)
    state = PartialState()  # set up by the checks above (`training_args.world_size`)
    with open_run_directory(
        state,
        "sft",
        training_args.output_dir,
        fingerprint_fields(script_args, model_args, training_args),
        overwrite=script_args.overwrite_output_dir,
        requested=normalize_resume_from_checkpoint(training_args.resume_from_checkpoint),
    ) as (run_dir, checkpoint, finished):
        if finished:
            return push_final_model(state, run_dir, repo_id, bool(training_args.hub_private_repo))
        tokenizer = load_chat_tokenizer(script_args, training_args, model_path)
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=bool(training_args.trust_remote_code))
        train_dataset, eval_dataset = load_training_conversations(script_args, training_args, tokenizer, config)
        run_dir.claim_on_all_ranks(script_args.overwrite_output_dir, state.is_main_process, state.wait_for_everyone)
        trainer = build_trainer(
            run_dir, training_args, model_args, script_args, model_path, config, tokenizer, train_dataset, eval_dataset
        )
        summary = train(trainer, run_dir, script_args, model_args, checkpoint, eval_dataset is not None)
        if summary is None:
            return 0
        save_sft_outputs(trainer, run_dir, tokenizer, model_path, model_args, script_args, summary)
        return push_final_model(trainer.accelerator, run_dir, repo_id, bool(training_args.hub_private_repo))


def prepare_arguments(script_args, training_args, model_args) -> tuple[str, str | None]:
    """Check the settings and complete them as the run needs them (before the run's fingerprint is taken).
    Returns the model to tune (a checked folder or Hub id) and the Hub repository final/ goes to (or None)."""
    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is required: the ShishuLM checkpoint to instruction-tune")
    repo_id = training_args.hub_model_id if training_args.push_to_hub else None
    if training_args.push_to_hub:
        if not repo_id:
            raise ValueError("push_to_hub needs hub_model_id: the Hub repository (ORG/NAME) final/ is pushed to")
        check_repo_id(repo_id, argument="hub_model_id")
    # The Trainer would push every checkpoint itself; final/ is pushed once, checked, at the end.
    training_args.push_to_hub = False
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if training_args.world_size != launched:
        raise RuntimeError(
            f"{launched} processes were launched but the Trainer sees a world size of {training_args.world_size}: "
            f"on a machine without GPUs use recipes/accelerate_configs/cpu_ddp.yaml"
        )

    trust = bool(training_args.trust_remote_code)  # SFTConfig's field, off by default
    model_path = resolve_checkpoint(model_args.model_name_or_path, trust)
    if model_args.use_peft and model_args.lora_target_modules is None:
        model_args.lora_target_modules = list(LLAMA_LORA_TARGETS)
    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}),
        "trust_remote_code": trust,
        "dtype": model_args.dtype or "float32",
        **({"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}),
    }
    return model_path, repo_id


def load_chat_tokenizer(script_args, training_args, model_path: str):
    """The model's tokenizer with a chat template: its own, or ChatML (then `<|im_end|>` is its eos); with
    `assistant_only_loss`, a template that marks the assistant's replies."""
    tokenizer = load_tokenizer(script_args.tokenizer_name or model_path, bool(training_args.trust_remote_code))
    if tokenizer.chat_template is None and training_args.chat_template_path is None:
        chatml_tokens = ("<|im_start|>", "<|im_end|>")
        missing = [t for t in chatml_tokens if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
        if missing:
            raise ValueError(
                f"the tokenizer has no chat template and lacks the ChatML tokens {missing}; set chat_template_path"
            )
        tokenizer.chat_template = CHATML_TEMPLATE
        # A reply ends with <|im_end|>: the released generation config must stop there, not at a base eos.
        tokenizer.eos_token = "<|im_end|>"
    if training_args.assistant_only_loss and training_args.chat_template_path is None:
        tokenizer.chat_template = with_generation_markers(tokenizer.chat_template)
    return tokenizer


def load_training_conversations(script_args, training_args, tokenizer, config):
    """(train, eval or None) conversations, checked against the model and the batch; evaluation is turned off
    when there is nothing held out."""
    check_tokenizer_fits_model(tokenizer, config, training_args.max_length)
    train_dataset, eval_dataset = load_conversations(script_args)
    needed = training_args.per_device_train_batch_size * training_args.world_size
    if len(train_dataset) < needed:
        raise ValueError(
            f"training data is too small: {len(train_dataset)} conversations, one batch needs "
            f"per_device_train_batch_size x processes = {needed}"
        )
    if eval_dataset is None and training_args.eval_strategy != "no":
        logger.warning(
            "no held-out conversations (num_eval_samples / dataset_test_split / eval_files): evaluation is off"
        )
        training_args.eval_strategy = "no"
    return train_dataset, eval_dataset


def build_trainer(
    run_dir, training_args, model_args, script_args, model_path, config, tokenizer, train_dataset, eval_dataset
):
    """TRL's `SFTTrainer` with atomic checkpoints into `run_dir`, metrics.jsonl and the loss PNG."""
    from trl import get_peft_config

    trainer = _atomic_sft_trainer_class()(
        model=model_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[
            MetricsCallback(
                run_dir.path,
                training_flops_per_token(config, training_args.max_length or config.max_position_embeddings),
                detect_peak_flops(),
                training_args.world_size,
            )
        ],
    )
    trainer.run_dir = run_dir
    if script_args.stop_after_steps is not None:
        trainer.add_callback(StopAfterStepsCallback(script_args.stop_after_steps))
    return trainer


def train(trainer, run_dir, script_args, model_args, checkpoint, evaluate: bool) -> dict | None:
    """Train (from `checkpoint`, or step 0) and return the run's summary; None when stopped by
    `stop_after_steps`."""
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if script_args.stop_after_steps is not None and trainer.state.global_step < trainer.state.max_steps:
        logger.warning("stop_after_steps=%d: stopping without finishing the run", script_args.stop_after_steps)
        return None
    summary = {
        "stage": "sft",
        "steps": trainer.state.global_step,
        "world_size": trainer.args.world_size,
        "train_loss": result.training_loss,
        "train_seconds": time.perf_counter() - started,
        "peft": bool(model_args.use_peft),
        "parameter_digests": _parameter_digests(trainer),
        "fingerprint": run_dir.fingerprint,
    }
    if evaluate:
        evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
        if evaluations and evaluations[-1].get("step") == trainer.state.global_step:
            summary["final_eval"] = evaluations[-1]  # already evaluated at the last step
        else:
            summary["final_eval"] = trainer.evaluate()
    return summary


def _parameter_digests(trainer) -> list[str] | None:
    from accelerate.utils import DistributedType, gather_object

    from .checkpointing import parameter_digest

    if trainer.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return None
    digest = parameter_digest(trainer.accelerator.unwrap_model(trainer.model))
    digests = gather_object([digest]) if trainer.accelerator.num_processes > 1 else [digest]
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks hold different parameters after training: {digests}")
    return digests


def save_sft_outputs(trainer, run_dir, tokenizer, model_path, model_args, script_args, summary) -> None:
    """`final/` (Hub-ready) and, with LoRA, `adapter/`; both written atomically by the main process."""
    accelerator = trainer.accelerator
    state_dict = accelerator.get_state_dict(trainer.model)  # gathers shards under FSDP / ZeRO-3
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(trainer.model)
        if model_args.use_peft:
            with atomic_directory(run_dir.path / ADAPTER_DIR, overwrite=True) as tmp:
                model.save_pretrained(tmp, state_dict=state_dict)
                tokenizer.save_pretrained(tmp)
                apply_default_permissions(tmp)
            if script_args.merge_adapter:
                merged = merge_adapter(model_path, run_dir.path / ADAPTER_DIR, bool(trainer.args.trust_remote_code))
                _write_final(run_dir, merged, merged.state_dict(), tokenizer, summary, model_path)
        else:
            _write_final(run_dir, model, state_dict, tokenizer, summary, model_path)
        atomic_write_json(run_dir.path / SUMMARY_FILE, summary)
        logger.info("finished: %s", run_dir.path / FINAL_DIR)
    accelerator.wait_for_everyone()


def _write_final(run_dir, model, state_dict, tokenizer, summary, model_path) -> None:
    from ..conversion.convert import CONVERSION_RECORD, read_conversion_record

    conversion = read_conversion_record(model_path)
    with atomic_directory(run_dir.path / FINAL_DIR, overwrite=True) as tmp:
        prepare_for_hub(model, tokenizer)
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "training_summary.json", summary)
        if conversion is not None:  # the fine-tuned model keeps the record of its layout: the card reads it
            atomic_write_json(tmp / CONVERSION_RECORD, conversion)
        apply_default_permissions(tmp)


def merge_adapter(base_path: str, adapter_dir: Path, trust_remote_code: bool = False):
    """Load the base model fresh, apply the saved adapter and merge it: the released weights are exactly
    what `PeftModel.from_pretrained(base, adapter).merge_and_unload()` gives any user."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_path, trust_remote_code=trust_remote_code, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


__all__ = [
    "CHATML_TEMPLATE",
    "LLAMA_LORA_TARGETS",
    "SFTScriptArguments",
    "load_conversations",
    "main",
    "merge_adapter",
    "with_generation_markers",
]


if __name__ == "__main__":
    sys.exit(main())
