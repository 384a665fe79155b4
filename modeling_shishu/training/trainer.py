"""The training loop shared by pretraining and healing: accelerate, packed blocks, AdamW with warmup +
cosine decay, gradient accumulation, clipping, mixed precision, atomic checkpoints and exact resume.

`CausalLMTrainer` trains with the next-token loss; `distill.DistillationTrainer` overrides
`compute_loss` / `evaluation_terms` to add the teacher. Everything a resumed run needs (weights,
optimizer, scheduler, per-rank RNG states, step, running log window) is in the checkpoint, and the data
order is a function of the step, so a resumed run logs the same losses as an uninterrupted one.
"""

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..io_utils import atomic_write_json
from ..precision import default_device, has_native_bf16
from ..sizes import training_flops_per_token
from .checkpointing import (
    load_rng_state,
    parameter_digest,
    restore_model_and_optimizer,
    save_checkpoint,
    save_final_model,
)
from .data import PackedBlocks, eval_batches
from .metrics import MetricsLogger, detect_peak_flops
from .run_directory import CHECKPOINT_PREFIX, FINAL_DIR, SUMMARY_FILE, TRAINER_STATE_FILE, RunDirectory


logger = logging.getLogger(__name__)


def has_accelerator() -> bool:
    """A GPU (or another torch accelerator: XPU, MPS, ...) is present."""
    accelerator_api = getattr(torch, "accelerator", None)  # torch >= 2.6
    return accelerator_api.is_available() if accelerator_api is not None else torch.cuda.is_available()


def resolve_mixed_precision(bf16: bool | None, fp16: bool = False, device: str | None = None) -> str | None:
    """`Accelerator(mixed_precision=...)` for TrainingArguments' `bf16` / `fp16` flags.

    True forces that precision; False leaves it to `accelerate launch` (else none), as the Trainer does;
    bf16 unset (None) is auto: the launch setting, else bf16 where the training device (`device`, default: the
    GPU if any, else the CPU) runs it natively (`precision.has_native_bf16`), else none.
    """
    if fp16:
        return "fp16"
    if bf16:
        return "bf16"
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None  # let the launch configuration decide
    if bf16 is None and has_native_bf16(device or default_device()):
        return "bf16"
    return "no"


def make_accelerator(train_args):
    """An `Accelerator` that runs on the CPU when there is no GPU, and that checks the process group.

    `accelerate launch --multi_gpu` on a machine without GPUs starts processes that each train alone
    unless the CPU is forced (then they join one gloo group). A process group smaller than the launcher's
    WORLD_SIZE is refused, and so are FSDP on a CPU (accelerate would fall back to DDP) and DeepSpeed.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    accelerator = Accelerator(
        cpu=not has_accelerator(),
        mixed_precision=resolve_mixed_precision(
            train_args.bf16, train_args.fp16, device=None if has_accelerator() else "cpu"
        ),
        log_with=make_trackers(train_args) or None,
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise RuntimeError(
            f"{launched} processes were launched but the process group has {accelerator.num_processes}: "
            f"on a machine without GPUs use recipes/accelerate_configs/cpu_ddp.yaml (or ACCELERATE_USE_CPU=1)"
        )
    if (
        os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
        and accelerator.distributed_type != DistributedType.FSDP
    ):
        # accelerate shards with FSDP only on accelerators; on the CPU it would quietly run plain DDP.
        raise ValueError(
            "the FSDP launch config needs GPUs (accelerate does not run FSDP on the CPU); use "
            "recipes/accelerate_configs/cpu_ddp.yaml here"
        )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise ValueError(
            "the pretrain/distill loop shards with FSDP2 (recipes/accelerate_configs/fsdp.yaml), not DeepSpeed; "
            "zero3.yaml is for the sft stage"
        )
    return accelerator


def make_trackers(train_args) -> list:
    """accelerate trackers for `report_to`. TensorBoard writes to `output_dir/runs/<run_name>`, the Trainer's
    folder; wandb and trackio log a run named `run_name` in `project` (see `CausalLMTrainer.init_trackers`)."""
    from accelerate.tracking import TensorBoardTracker

    logging_dir = Path(train_args.output_dir) / "runs"
    return [
        TensorBoardTracker(tracker_run_name(train_args), logging_dir) if name == "tensorboard" else name
        for name in train_args.report_to
    ]


def tracker_run_name(train_args) -> str:
    return train_args.run_name or Path(train_args.output_dir).resolve().name


def tracker_values(record: dict) -> dict:
    """A metrics record as the Trainer's tracker callbacks name it: `eval/loss`, `train/loss`, `train/lr`, ..."""
    values = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        values[f"eval/{key[len('eval_') :]}" if key.startswith("eval_") else f"train/{key}"] = value
    return values


def setup_logging(accelerator) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
    )
    import transformers

    transformers.utils.logging.set_verbosity_warning() if accelerator.is_main_process else (
        transformers.utils.logging.set_verbosity_error()
    )


def learning_rate_multiplier(
    step: int, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float
) -> float:
    """Linear warmup from 0 to 1 over `warmup_steps`, then cosine / linear decay to `min_lr_ratio` (or constant)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(progress, 1.0)
    if schedule == "linear":
        decay = 1.0 - progress
    else:
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def shifted_token_losses(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-position next-token cross-entropy, `(batch, seq - 1)`, in float32."""
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="none"
    ).view(input_ids.shape[0], -1)


class CausalLMTrainer:
    """Causal-LM training of a ShishuLM on packed blocks; `train()` runs or resumes the run in `run_dir`."""

    stage = "pretrain"

    def __init__(
        self,
        *,
        accelerator,
        model,
        tokenizer,
        train_args,
        train_batches,
        eval_data: PackedBlocks | None,
        run_dir: RunDirectory,
        block_size: int,
        total_steps: int,
    ):
        self.accelerator = accelerator
        self.args = train_args
        self.tokenizer = tokenizer
        self.train_batches = train_batches
        self.eval_data = eval_data
        self.run_dir = run_dir
        self.block_size = block_size
        self.total_steps = total_steps
        self.metrics = MetricsLogger(run_dir.path, enabled=accelerator.is_main_process)
        # JSON records of the model's origin written next to the final model (e.g. conversion.json)
        self.carried_files: dict[str, dict] = {}

        self.model_config = model.config
        self.flops_per_token = training_flops_per_token(model.config, block_size)
        self.peak_flops = detect_peak_flops(train_args.peak_flops_per_device)
        self.tokens_per_step = train_batches.samples_per_step * block_size

        optimizer = self.create_optimizer(model)
        if train_args.torch_compile:
            # In place: parameter names, the state dict and `save_pretrained` stay those of the model.
            model.compile()
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        # The scheduler stays outside `prepare`: accelerate's wrapper would step it once per process.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer,
            self._lr_lambda,
        )
        self.step = 0
        self.tokens_seen = 0
        self.elapsed = 0.0
        self.window = self._empty_window()

    # ------------------------------------------------------------------------------------- setup

    def create_optimizer(self, model) -> torch.optim.Optimizer:
        """AdamW; weight decay on matrices only (not on norms and biases)."""
        decay, no_decay = [], []
        for parameter in model.parameters():
            if parameter.requires_grad:
                (decay if parameter.ndim >= 2 else no_decay).append(parameter)
        groups = [
            {"params": decay, "weight_decay": self.args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(
            groups,
            lr=self.args.learning_rate,
            betas=(self.args.adam_beta1, self.args.adam_beta2),
            eps=self.args.adam_epsilon,
            fused=torch.cuda.is_available() or None,
        )

    def _lr_lambda(self, step: int) -> float:
        return learning_rate_multiplier(
            step,
            self.total_steps,
            self.args.num_warmup_steps(self.total_steps),
            self.args.lr_scheduler_type,
            self.args.min_lr_ratio,
        )

    @staticmethod
    def _empty_window() -> dict:
        return {"steps": 0, "loss": 0.0, "extras": {}, "tokens": 0, "seconds": 0.0, "grad_norm": 0.0}

    # -------------------------------------------------------------------------------------- loss

    def compute_loss(self, model, input_ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Mean next-token loss of a micro-batch, and extra scalars to log (none here)."""
        outputs = model(input_ids=input_ids, labels=input_ids, use_cache=False)
        return outputs.loss, {}

    def evaluation_terms(self, model, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample held-out quantities, averaged over samples by `evaluate`."""
        logits = model(input_ids=input_ids, use_cache=False).logits
        return {"eval_loss": shifted_token_losses(logits, input_ids).mean(dim=1)}

    # ------------------------------------------------------------------------------------ resume

    def trainer_state(self) -> dict:
        return {
            "stage": self.stage,
            "step": self.step,
            "total_steps": self.total_steps,
            "tokens_seen": self.tokens_seen,
            "elapsed_seconds": self.elapsed,
            "world_size": self.accelerator.num_processes,
            "scheduler": self.scheduler.state_dict(),
            "log_window": self.window,
            "fingerprint": self.run_dir.fingerprint,
        }

    def resume_from(self, folder) -> None:
        state = json.loads((folder / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
        if state.get("fingerprint") != self.run_dir.fingerprint:
            raise FileExistsError(f"{folder} belongs to a different run (fingerprint {state.get('fingerprint')})")
        if state["world_size"] != self.accelerator.num_processes:
            logger.warning(
                "resuming a %d-process run with %d processes: the data order differs from an uninterrupted run",
                state["world_size"],
                self.accelerator.num_processes,
            )
        restore_model_and_optimizer(folder, self.model, self.optimizer, self.model_config)
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.tokens_seen = state["tokens_seen"]
        self.elapsed = state["elapsed_seconds"]
        self.window = state["log_window"]
        load_rng_state(folder, self.accelerator.process_index)
        self.train_batches.start_at(self.step)
        logger.info("resumed from %s at step %d", folder, self.step)

    # ------------------------------------------------------------------------------------- train

    def train(self, resume_from_checkpoint=None) -> dict | None:
        """Run the training, from step 0 or from the checkpoint folder given; return the summary, or None when
        stopped by `stop_after_steps`."""
        accelerator, args = self.accelerator, self.args
        if resume_from_checkpoint is not None:
            self.resume_from(Path(resume_from_checkpoint))
        if accelerator.is_main_process:
            self.metrics.truncate_after(self.step)
        accelerator.wait_for_everyone()

        logger.info(
            "%s: %d steps x %d tokens/step on %d process(es), %.3g training FLOPs/token, mixed precision %s, "
            "peak %s FLOP/s per device%s",
            self.stage,
            self.total_steps,
            self.tokens_per_step,
            accelerator.num_processes,
            self.flops_per_token,
            accelerator.mixed_precision,
            f"{self.peak_flops:.3g}" if self.peak_flops else "unknown (no MFU)",
            ", torch.compile" if self.args.torch_compile else "",
        )
        self.init_trackers()
        if self.step == 0 and args.eval_on_start and self.eval_data is not None:
            self._log({"step": 0, **self.evaluate()})

        from tqdm.auto import tqdm

        progress = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=self.stage,
            disable=not (accelerator.is_main_process and args.progress_bar),
            dynamic_ncols=True,
        )
        while self.step < self.total_steps:
            self._train_step()
            progress.update(1)
            step = self.step
            if step % args.logging_steps == 0 or step == self.total_steps:
                record = self._flush_window()
                progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
            if self.eval_data is not None and (step % args.eval_steps == 0 or step == self.total_steps):
                self._log({"step": step, **self.evaluate()})
            if step % args.save_steps == 0 and step < self.total_steps:
                self._save_checkpoint()
            if args.stop_after_steps is not None and step >= args.stop_after_steps and step < self.total_steps:
                progress.close()
                logger.warning("stop_after_steps=%d: stopping without finishing the run", args.stop_after_steps)
                return None
        progress.close()
        return self._finish()

    def _train_step(self) -> None:
        accelerator, args = self.accelerator, self.args
        model, optimizer = self.model, self.optimizer
        model.train()
        started = time.perf_counter()
        learning_rate = self.scheduler.get_last_lr()[0]
        micro_batches = self.train_batches.micro_batches(self.step)
        accumulation = len(micro_batches)
        loss_sum = torch.zeros((), device=accelerator.device)
        extras_sum: dict[str, torch.Tensor] = {}
        for index, input_ids in enumerate(micro_batches):
            input_ids = input_ids.to(accelerator.device)
            # Gradients are all-reduced only on the last micro-batch of the step.
            sync = contextlib.nullcontext() if index == accumulation - 1 else accelerator.no_sync(model)
            with sync:
                with accelerator.autocast():
                    loss, extras = self.compute_loss(model, input_ids)
                accelerator.backward(loss / accumulation)
            loss_sum += loss.detach().float()
            for key, value in extras.items():
                extras_sum[key] = extras_sum.get(key, 0.0) + value.detach().float()
        if args.max_grad_norm > 0:
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        else:
            grad_norm = torch.zeros(())
        optimizer.step()
        self.scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        # Mean over micro-batches and ranks: every micro-batch holds the same number of tokens.
        values = torch.stack([loss_sum, *extras_sum.values()]) / accumulation
        values = accelerator.reduce(values, reduction="mean").tolist()
        seconds = time.perf_counter() - started
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        self.elapsed += seconds
        window = self.window
        window["steps"] += 1
        window["loss"] += values[0]
        for key, value in zip(extras_sum, values[1:]):
            window["extras"][key] = window["extras"].get(key, 0.0) + value
        window["tokens"] += self.tokens_per_step
        window["seconds"] += seconds
        window["grad_norm"] += float(grad_norm)
        window["lr"] = learning_rate

    def _flush_window(self) -> dict:
        window, steps = self.window, self.window["steps"]
        tokens_per_second = window["tokens"] / window["seconds"] if window["seconds"] > 0 else None
        record = {
            "step": self.step,
            "loss": window["loss"] / steps,
            **{key: value / steps for key, value in window["extras"].items()},
            "lr": window["lr"],
            "grad_norm": window["grad_norm"] / steps if self.args.max_grad_norm > 0 else None,
            "epoch": round(self.train_batches.epoch_at(self.step), 4),
            "tokens_seen": self.tokens_seen,
            "tokens_per_second": tokens_per_second,
            "train_seconds": self.elapsed,  # optimizer steps only (no evaluation or checkpointing), across resumes
        }
        if self.peak_flops and tokens_per_second:
            record["mfu"] = (
                self.flops_per_token * tokens_per_second / (self.peak_flops * self.accelerator.num_processes)
            )
        self._log(record)
        self.window = self._empty_window()
        return record

    def init_trackers(self) -> None:
        if not self.args.report_to:
            return
        # Trackers take flat scalars: lists, mappings and None become their JSON text.
        recipe = {**self.run_dir.config, "stage": self.stage, "fingerprint": self.run_dir.fingerprint}
        config = {
            key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value, default=str)
            for key, value in recipe.items()
        }
        named = {"name": tracker_run_name(self.args)}
        self.accelerator.init_trackers(
            self.args.project, config=config, init_kwargs={"wandb": named, "trackio": named}
        )

    def _log(self, record: dict) -> None:
        self.metrics.log(record)
        if self.args.report_to:
            self.accelerator.log(tracker_values(record), step=record["step"])
        if self.accelerator.is_main_process and not self.args.progress_bar:
            logger.info(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out means over `eval_data`, identical on every rank."""
        accelerator = self.accelerator
        self.model.eval()
        sums, count = None, torch.zeros((), device=accelerator.device)
        for input_ids, weights in eval_batches(
            self.eval_data, self.args.per_device_eval_batch_size, accelerator.num_processes, accelerator.process_index
        ):
            input_ids, weights = input_ids.to(accelerator.device), weights.to(accelerator.device)
            with accelerator.autocast():
                terms = self.evaluation_terms(self.model, input_ids)
            if sums is None:
                sums = {key: torch.zeros((), device=accelerator.device) for key in terms}
            for key, value in terms.items():
                sums[key] += (value.float() * weights).sum()
            count += weights.sum()
        keys = list(sums)
        totals = accelerator.reduce(torch.stack([sums[k] for k in keys] + [count]), reduction="sum").tolist()
        results = {key: total / totals[-1] for key, total in zip(keys, totals)}
        results["eval_perplexity"] = math.exp(min(results["eval_loss"], 50.0))
        self.model.train()
        return results

    # ------------------------------------------------------------------------------- checkpoints

    def _save_checkpoint(self) -> None:
        folder = self.run_dir.path / f"{CHECKPOINT_PREFIX}{self.step}"
        save_checkpoint(self.accelerator, folder, self.model, self.optimizer, self.tokenizer, self.trainer_state())
        if self.accelerator.is_main_process:
            self.run_dir.rotate(self.args.save_total_limit)
            self.metrics.plot(title=f"{self.stage}: {self.run_dir.path.name}")
        self.accelerator.wait_for_everyone()

    def _check_ranks_in_sync(self) -> list[str] | None:
        """Parameter digests of every rank (identical under DDP); None when parameters are sharded (FSDP)."""
        from accelerate.utils import DistributedType, gather_object

        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            return None
        digest = parameter_digest(self.accelerator.unwrap_model(self.model))
        digests = gather_object([digest]) if self.accelerator.num_processes > 1 else [digest]
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks hold different parameters after training: {digests}")
        return digests

    def _finish(self) -> dict:
        accelerator = self.accelerator
        digests = self._check_ranks_in_sync()
        records = self.metrics.records() if accelerator.is_main_process else []
        train_records = [r for r in records if r.get("loss") is not None]
        eval_records = [r for r in records if r.get("eval_loss") is not None]
        summary = {
            "stage": self.stage,
            "steps": self.step,
            "world_size": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
            "tokens_seen": self.tokens_seen,
            "tokens_per_step": self.tokens_per_step,
            "train_seconds": self.elapsed,
            "tokens_per_second": self.tokens_seen / self.elapsed if self.elapsed else None,
            "flops_per_token": self.flops_per_token,
            "peak_flops_per_device": self.peak_flops,
            "torch_compile": self.args.torch_compile,
            "first_loss": train_records[0]["loss"] if train_records else None,
            "final_loss": train_records[-1]["loss"] if train_records else None,
            "first_eval": {k: v for k, v in eval_records[0].items() if k != "step"} if eval_records else None,
            "final_eval": {k: v for k, v in eval_records[-1].items() if k != "step"} if eval_records else None,
            "parameter_digests": digests,
            "fingerprint": self.run_dir.fingerprint,
        }
        save_final_model(
            accelerator,
            self.run_dir.path / FINAL_DIR,
            self.model,
            self.tokenizer,
            extra_files={
                **self.carried_files,
                "training_summary.json": summary,
                "training_config.json": self.run_dir.config,
            },
        )
        if accelerator.is_main_process:
            self.metrics.plot(title=f"{self.stage}: {self.run_dir.path.name}")
            atomic_write_json(self.run_dir.path / SUMMARY_FILE, summary)
            logger.info("finished: %s", self.run_dir.path / FINAL_DIR)
        accelerator.wait_for_everyone()
        return summary
