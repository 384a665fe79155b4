"""Training one (arm, init seed) with the project's loop, and measuring the trained model: held-out loss and
bits per byte, unique parameters, KV-cache bytes per token from a real cache, decode latency."""

import json
import logging
import math
import statistics
import time
from pathlib import Path

import torch

from ...bench import kv_cache_bytes
from ...sizes import applied_parameters, unique_parameters
from .study import Study


logger = logging.getLogger(__name__)


def train_arm(model_args, data_args, train_args, init_seed: int, tokenizer_dir: Path) -> dict:
    """Pretrain one (arm, init seed) with the project's loop; return its training summary.

    The same steps as `modeling_shishu.training.pretrain.run`, except that the initialisation seed is
    separate from the data-order seed (`train_args.seed`), so every run of the study sees the same batches.
    """
    from accelerate.utils import set_seed

    from ..arguments import fingerprint_fields
    from ..data import check_tokenizer_fits_model
    from ..pretrain import build_config, build_model
    from ..run_directory import SUMMARY_FILE
    from ..runner import build_training_data, claim_run_directory, load_tokenizer, open_run_directory
    from ..trainer import CausalLMTrainer, make_accelerator

    fields = {**fingerprint_fields(model_args, data_args, train_args), "init_seed": init_seed}
    accelerator = make_accelerator(train_args)
    # A finished run is reused; one stopped mid-way (a killed study) continues from its last checkpoint.
    opened = open_run_directory(accelerator, "pretrain", train_args.output_dir, fields, overwrite=False)
    with opened as (run_dir, checkpoint, finished):
        if finished:
            logger.info("reusing the finished run in %s", run_dir.path)
            return json.loads((run_dir.path / SUMMARY_FILE).read_text(encoding="utf-8"))
        tokenizer = load_tokenizer(str(tokenizer_dir))
        config = build_config(model_args, tokenizer)
        check_tokenizer_fits_model(tokenizer, config, data_args.max_length)
        train_batches, eval_data, total_steps = build_training_data(data_args, train_args, tokenizer, accelerator)
        set_seed(init_seed)
        model = build_model(model_args, config)
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
        return trainer.train(checkpoint)


def held_out_text_blocks(tokenizer, block_size: int, max_blocks: int | None) -> torch.Tensor:
    """The Shakespeare VALIDATION split, each work followed by EOS, cut into `block_size` blocks."""
    from ... import assets

    ids = []
    for text in assets.shakespeare_texts("validation"):
        ids.extend(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + [tokenizer.eos_token_id])
    num_blocks = len(ids) // block_size if max_blocks is None else min(max_blocks, len(ids) // block_size)
    if num_blocks == 0:
        raise ValueError(f"the validation split holds {len(ids)} tokens: not one block of {block_size}")
    return torch.tensor(ids[: num_blocks * block_size]).view(num_blocks, block_size)


@torch.inference_mode()
def held_out_loss(model, blocks: torch.Tensor, byte_lengths: torch.Tensor, batch_size: int = 16) -> dict:
    """Mean next-token loss (nats/token) and bits per byte of the predicted tokens' text."""
    import torch.nn.functional as F

    model.eval()
    nll, tokens, nbytes = 0.0, 0, 0
    for start in range(0, len(blocks), batch_size):
        ids = blocks[start : start + batch_size].to(model.device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        targets = ids[:, 1:]
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum").item()
        tokens += targets.numel()
        nbytes += int(byte_lengths[targets.cpu()].sum())
    return {"loss": nll / tokens, "bits_per_byte": nll / math.log(2) / nbytes, "tokens": tokens, "bytes": nbytes}


@torch.inference_mode()
def decode_measurements(model, context: int, steps: int, repeats: int, seed: int = 0) -> dict:
    """KV-cache bytes per token of a real cache after a `context`-token prefill, and the median latency of
    one greedy decode step at that context (batch 1), over `repeats` x `steps` timed steps."""
    from transformers.cache_utils import DynamicCache

    model.eval()
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, context), generator=generator).to(model.device)
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
    kv_bytes = kv_cache_bytes(cache)
    first_token = logits[:, -1:].argmax(-1)
    samples = []
    for _ in range(repeats):
        surplus = cache.get_seq_length() - context
        if surplus > 0:  # back to the prefilled context, so every repeat times the same positions
            cache.crop(-surplus)
        token = first_token
        for _ in range(steps):
            started = time.perf_counter()
            token = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
            samples.append(time.perf_counter() - started)
    return {
        "kv_bytes_per_token": kv_bytes / context,
        "kv_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "decode_ms_per_token": 1000 * statistics.median(samples[steps:] or samples),  # first repeat warms up
    }


def measure_run(run_dir: Path, summary: dict, study: Study, blocks: torch.Tensor, byte_lengths: torch.Tensor) -> dict:
    """Everything the table reports for one trained (arm, seed)."""
    from ... import ShishuForCausalLM
    from ..metrics import read_metrics

    model = ShishuForCausalLM.from_pretrained(run_dir / "final", dtype=torch.float32)
    config = model.config
    unique, _ = unique_parameters(model)
    result = {
        "unique_parameters": unique,
        "non_embedding_parameters": unique - model.get_input_embeddings().weight.numel(),
        "applied_parameters": applied_parameters(config),
        "train_flops_per_token": summary["flops_per_token"],
        "attention_layers": len(config.attention_layer_indices),
        "mlp_layers": len(config.mlp_layer_indices),
        "layer_types": list(config.layer_types),
        "mlp_share_groups": [list(g) for g in config.mlp_share_groups],
        "train_tokens": summary["tokens_seen"],
        "train_tokens_per_second": summary["tokens_per_second"],
        "train_seconds": summary["train_seconds"],
        "final_train_loss": summary["final_loss"],
        "held_out": held_out_loss(model, blocks, byte_lengths),
        **decode_measurements(model, study.decode_context, study.decode_steps, study.decode_repeats),
    }
    result["loss_curve"] = [
        (r["tokens_seen"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl") if r.get("loss") is not None
    ]
    return result
