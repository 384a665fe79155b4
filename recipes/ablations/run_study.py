"""Small-scale replication study: from-scratch pretraining of ShishuLM layouts on the same tokens.

Reproduce the committed results (docs/ablations.md, docs/ablations.json, docs/ablations.png) with one command:

    .venv/bin/python recipes/ablations/run_study.py --study recipes/ablations/study.yaml

What it does, in order:

1. Reads the study file (arms, init seeds, evaluation settings) and each arm's pretraining recipe, and
   refuses arms whose data or trainer settings differ (every arm must see the same tokens in the same
   order) or whose `extra_mlp_layers` does not match the parent's parameter count when the arm asks for it.
2. Trains a byte-level BPE tokenizer on the Shakespeare TRAIN split (cached), so that the embedding does
   not swamp the differences between arms.
3. Pretrains every arm for every init seed with the project's training loop (`modeling_shishu.training`):
   the data order comes from the recipe's `seed` (the same for all runs), the initialisation from the
   study's init seed. Finished runs in `--output_dir` are reused, so an interrupted study picks up where
   it stopped.
4. Measures each trained model: held-out loss and bits per byte on the Shakespeare VALIDATION split,
   unique parameters, KV-cache bytes per token (read from a real cache), training tokens/s and decode
   latency (ms/token at a fixed context, batch 1, median).
5. Writes `<results_dir>/ablations.json`, `ablations.png` and the results block of `ablations.md`.

Everything runs on one process; on a GPU machine the same command trains there (the trainer picks the
device and mixed precision).
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml


REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from modeling_shishu.bench import kv_cache_bytes  # noqa: E402
from modeling_shishu.io_utils import atomic_directory, atomic_write_json, atomic_write_text  # noqa: E402


logger = logging.getLogger("ablations")

RESULTS_START = "<!-- results:start (written by recipes/ablations/run_study.py) -->"
RESULTS_END = "<!-- results:end -->"
# Recipe fields allowed to differ between arms: the layout and where each run is written.
ARM_FIELDS = frozenset({"config_overrides", "num_mlp_layers", "share", "extra_mlp_layers", "output_dir"})


# ---------------------------------------------------------------------------------------- study file


@dataclass
class Arm:
    """One layout of the study: a pretraining recipe plus how the study reports it."""

    name: str
    recipe: Path
    label: str
    match_parent_params: bool = False  # extra_mlp_layers must be the count that best matches the parent


@dataclass
class Study:
    """The study file: arms (the first is the all-attention parent), init seeds and measurement settings."""

    arms: list[Arm]
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    tokenizer_vocab_size: int = 2048
    eval_blocks: int | None = 160  # held-out blocks of max_length tokens for loss / bits per byte
    decode_context: int = 256
    decode_steps: int = 16
    decode_repeats: int = 5
    num_threads: int | None = None  # torch threads; None keeps torch's default

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "Study":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"study file {path} does not exist")
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"study file {path} must hold a YAML mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown key(s) in {path}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        arms = []
        for entry in raw.get("arms") or []:
            if not isinstance(entry, dict) or not {"name", "recipe"} <= set(entry):
                raise ValueError(f"{path}: every arm needs a name and a recipe, got {entry!r}")
            extra = sorted(set(entry) - {f.name for f in dataclasses.fields(Arm)})
            if extra:
                raise ValueError(f"{path}: arm {entry['name']!r} has unknown key(s) {', '.join(extra)}")
            recipe = Path(entry["recipe"])
            if not recipe.is_absolute():
                recipe = path.parent / recipe
            arms.append(
                Arm(
                    name=str(entry["name"]),
                    recipe=recipe,
                    label=str(entry.get("label", entry["name"])),
                    match_parent_params=bool(entry.get("match_parent_params", False)),
                )
            )
        if len(arms) < 2:
            raise ValueError(f"{path}: a study needs at least two arms (the parent first), got {len(arms)}")
        names = [arm.name for arm in arms]
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: arm names must be unique, got {names}")
        study = cls(arms=arms, **{k: v for k, v in raw.items() if k != "arms"})
        study.check()
        return study

    def check(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {self.seeds}")
        if self.tokenizer_vocab_size < 260:
            raise ValueError(
                f"tokenizer_vocab_size must be >= 260 (256 bytes + specials), got {self.tokenizer_vocab_size}"
            )
        if self.eval_blocks is not None and self.eval_blocks < 1:
            raise ValueError(f"eval_blocks must be >= 1 or null (all), got {self.eval_blocks}")
        if self.decode_context < 1 or self.decode_steps < 1 or self.decode_repeats < 1:
            raise ValueError("decode_context, decode_steps and decode_repeats must be >= 1")


def load_arm_recipes(study: Study, output_dir: Path, overrides: list[str]) -> dict:
    """Parse each arm's recipe (plus command-line overrides) and check that the arms differ only in layout."""
    from modeling_shishu.training.arguments import DataArguments, ModelArguments, TrainArguments, parse_recipe_args

    recipes = {}
    for arm in study.arms:
        argv = ["--config", str(arm.recipe), "--output_dir", str(output_dir / arm.name), *overrides]
        model_args, data_args, train_args = parse_recipe_args((ModelArguments, DataArguments, TrainArguments), argv)
        if model_args.config_name is None:
            raise ValueError(f"arm {arm.name!r}: the study pretrains from scratch, set config_name in {arm.recipe}")
        recipes[arm.name] = (model_args, data_args, train_args)

    def shared(args_tuple):
        values = {}
        for args in args_tuple:
            values.update({k: v for k, v in dataclasses.asdict(args).items() if k not in ARM_FIELDS})
        return values

    parent = study.arms[0].name
    reference = shared(recipes[parent])
    for arm in study.arms[1:]:
        values = shared(recipes[arm.name])
        differing = sorted(k for k in set(reference) | set(values) if reference.get(k) != values.get(k))
        if differing:
            raise ValueError(
                f"arm {arm.name!r} differs from {parent!r} in {', '.join(differing)}: every arm must train on the "
                f"same tokens with the same trainer; only {', '.join(sorted(ARM_FIELDS))} may differ"
            )
        if recipes[arm.name][0].config_overrides != recipes[parent][0].config_overrides:
            raise ValueError(
                f"arm {arm.name!r}: config_overrides differ from {parent!r}; the arms must share one parent shape"
            )
    return recipes


# ---------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(vocab_size: int, out_dir: Path, texts: list[str]) -> Path:
    """A byte-level BPE tokenizer with one special token (`<|endoftext|>`: BOS, EOS and padding), saved
    as a transformers tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = "<|endoftext|>"
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=special, eos_token=special, pad_token=special
    )
    with atomic_directory(out_dir, overwrite=True) as tmp:
        tokenizer.save_pretrained(tmp)
    return out_dir


def shakespeare_tokenizer(vocab_size: int) -> Path:
    """The study tokenizer, trained once on the Shakespeare TRAIN split and cached."""
    from modeling_shishu import assets

    folder = assets.cache_dir() / "tokenizers" / f"shakespeare-train-bpe-{vocab_size}"
    if (folder / "tokenizer.json").is_file():
        return folder
    logger.info("training a %d-token byte-level BPE on the Shakespeare train split", vocab_size)
    return train_tokenizer(vocab_size, folder, assets.shakespeare_texts("train"))


def token_byte_lengths(tokenizer) -> torch.Tensor:
    """UTF-8 bytes each token id stands for (0 for special tokens). In a byte-level BPE every character
    of a token's string is exactly one byte."""
    from tokenizers import pre_tokenizers

    if not isinstance(tokenizer.backend_tokenizer.pre_tokenizer, pre_tokenizers.ByteLevel):
        raise ValueError("bits per byte needs a byte-level BPE tokenizer")
    special = set(tokenizer.all_special_ids)
    lengths = torch.zeros(len(tokenizer), dtype=torch.int64)
    for token_id in range(len(tokenizer)):
        if token_id not in special:
            lengths[token_id] = len(tokenizer.convert_ids_to_tokens(token_id))
    return lengths


# ---------------------------------------------------------------------------------------- training


def train_arm(model_args, data_args, train_args, init_seed: int, tokenizer_dir: Path) -> dict:
    """Pretrain one (arm, init seed) with the project's loop; return its training summary.

    The same steps as `modeling_shishu.training.pretrain.run`, except that the initialisation seed is
    separate from the data-order seed (`train_args.seed`), so every run of the study sees the same batches.
    """
    from accelerate.utils import set_seed

    from modeling_shishu.training.arguments import fingerprint_fields
    from modeling_shishu.training.checkpointing import SUMMARY_FILE, RunDirectory
    from modeling_shishu.training.data import check_tokenizer_fits_model
    from modeling_shishu.training.pretrain import build_config, build_model
    from modeling_shishu.training.runner import build_training_data, claim_run_directory, load_tokenizer
    from modeling_shishu.training.trainer import CausalLMTrainer, make_accelerator

    fields = fingerprint_fields(model_args, data_args, train_args)
    fields["init_seed"] = init_seed
    run_dir = RunDirectory(train_args.output_dir, "pretrain", fields)
    run_dir.check()
    if run_dir.is_finished():
        logger.info("reusing the finished run in %s", run_dir.path)
        return json.loads((run_dir.path / SUMMARY_FILE).read_text(encoding="utf-8"))

    accelerator = make_accelerator(train_args)
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
    # A run stopped mid-way (killed study) continues from its last checkpoint.
    return trainer.train(run_dir.latest_checkpoint())


# ---------------------------------------------------------------------------------------- measurements


def count_unique_parameters(model) -> int:
    """Parameters stored once each: `parameters()` yields a tied embedding once, and later layers of a
    share group own no parameters (they run the owner's block)."""
    return sum(parameter.numel() for parameter in model.parameters())


def parameters_of_config(config) -> int:
    """Unique parameters of a ShishuLM config, counted on the meta device (no memory, no init)."""
    from modeling_shishu import ShishuForCausalLM

    with torch.device("meta"):
        model = ShishuForCausalLM(config)
    return count_unique_parameters(model)


def extra_layers_to_match(parent_params: int, make_config, max_extra: int = 64) -> tuple[int, int]:
    """The `extra_mlp_layers` whose unique parameter count is closest to `parent_params` (smallest on a
    tie), and that count. `make_config(n)` builds the layout with n extra MLP-only layers."""
    best = None
    for extra in range(max_extra + 1):
        params = parameters_of_config(make_config(extra))
        if best is None or abs(params - parent_params) < abs(best[1] - parent_params):
            best = (extra, params)
        if params > parent_params:  # counts only grow with extra layers
            break
    return best


def check_parameter_matching(study: Study, recipes: dict, tokenizer) -> None:
    """Refuse an arm marked `match_parent_params` whose extra_mlp_layers is not the best match."""
    from modeling_shishu.training.pretrain import build_config

    parent_args = recipes[study.arms[0].name][0]
    parent_params = parameters_of_config(build_config(parent_args, tokenizer))
    for arm in study.arms:
        if not arm.match_parent_params:
            continue
        model_args = recipes[arm.name][0]
        best, params = extra_layers_to_match(
            parent_params, lambda n: build_config(dataclasses.replace(model_args, extra_mlp_layers=n), tokenizer)
        )
        if model_args.extra_mlp_layers != best:
            raise ValueError(
                f"arm {arm.name!r} should match the parent's {parent_params:,} parameters: extra_mlp_layers="
                f"{best} gives {params:,}, but {arm.recipe} sets {model_args.extra_mlp_layers}"
            )


def held_out_text_blocks(tokenizer, block_size: int, max_blocks: int | None) -> torch.Tensor:
    """The Shakespeare VALIDATION split, each work followed by EOS, cut into `block_size` blocks."""
    from modeling_shishu import assets

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
    from modeling_shishu import ShishuForCausalLM
    from modeling_shishu.training.metrics import applied_parameters, read_metrics

    model = ShishuForCausalLM.from_pretrained(run_dir / "final", dtype=torch.float32)
    config = model.config
    unique = count_unique_parameters(model)
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


# ---------------------------------------------------------------------------------------- report


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(study: Study, runs: dict) -> list[dict]:
    """Per-arm means and spreads over seeds (architecture numbers are identical across seeds)."""
    rows = []
    for arm in study.arms:
        per_seed = runs[arm.name]
        first = per_seed[0]
        bpb = [r["held_out"]["bits_per_byte"] for r in per_seed]
        loss = [r["held_out"]["loss"] for r in per_seed]
        rows.append(
            {
                "arm": arm.name,
                "label": arm.label,
                "layout": layout_string(first["layer_types"]),
                "share_groups": first["mlp_share_groups"],
                "unique_parameters": first["unique_parameters"],
                "non_embedding_parameters": first["non_embedding_parameters"],
                "train_flops_per_token": first["train_flops_per_token"],
                "kv_bytes_per_token": first["kv_bytes_per_token"],
                "kv_dtype": first["kv_dtype"],
                "held_out_loss_mean": _mean_std(loss)[0],
                "held_out_loss_std": _mean_std(loss)[1],
                "bits_per_byte_mean": _mean_std(bpb)[0],
                "bits_per_byte_std": _mean_std(bpb)[1],
                "bits_per_byte_per_seed": bpb,
                "train_tokens": first["train_tokens"],
                "train_tokens_per_second_mean": statistics.fmean(r["train_tokens_per_second"] for r in per_seed),
                "decode_ms_per_token_median": statistics.median(r["decode_ms_per_token"] for r in per_seed),
            }
        )
    base = rows[0]
    for row in rows:
        row["parameters_vs_parent"] = row["unique_parameters"] / base["unique_parameters"]
        row["kv_vs_parent"] = row["kv_bytes_per_token"] / base["kv_bytes_per_token"]
        row["bits_per_byte_delta_vs_parent"] = row["bits_per_byte_mean"] - base["bits_per_byte_mean"]
        row["bits_per_byte_relative_vs_parent"] = row["bits_per_byte_mean"] / base["bits_per_byte_mean"] - 1
        # Paired by seed: same init seed, same data order, only the layout differs.
        paired = [b - p for b, p in zip(row["bits_per_byte_per_seed"], base["bits_per_byte_per_seed"])]
        row["bits_per_byte_paired_delta_std"] = _mean_std(paired)[1]
    return rows


def layout_string(layer_types: list[str]) -> str:
    """`8xA+4xM` style summary of layer_types."""
    runs = []
    for layer_type in layer_types:
        symbol = "A" if layer_type == "full_attention" else "M"
        if runs and runs[-1][0] == symbol:
            runs[-1][1] += 1
        else:
            runs.append([symbol, 1])
    return "+".join(f"{count}x{symbol}" for symbol, count in runs)


def markdown_table(rows: list[dict], seeds: list[int]) -> str:
    header = (
        "| arm | layout (A: attention, M: MLP-only) | unique params | vs parent | KV bytes/token | train GFLOP/token "
        f"| held-out loss | bits/byte (mean ± sd, {len(seeds)} seeds) | Δ bits/byte vs parent (± paired sd) | train tokens/s "
        "| decode ms/token |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    lines = []
    for row in rows:
        shared = (
            f" (shared {', '.join('+'.join(map(str, g)) for g in row['share_groups'])})" if row["share_groups"] else ""
        )
        delta = (
            "—"
            if row is rows[0]
            else (
                f"{row['bits_per_byte_delta_vs_parent']:+.4f} ± {row['bits_per_byte_paired_delta_std']:.4f} "
                f"({100 * row['bits_per_byte_relative_vs_parent']:+.1f}%)"
            )
        )
        lines.append(
            f"| {row['label']} | {row['layout']}{shared} | {row['unique_parameters'] / 1e6:.3f}M | "
            f"{100 * row['parameters_vs_parent']:.1f}% | {row['kv_bytes_per_token']:,.0f} ({row['kv_dtype']}) | "
            f"{row['train_flops_per_token'] / 1e9:.4f} | {row['held_out_loss_mean']:.4f} | "
            f"{row['bits_per_byte_mean']:.4f} ± {row['bits_per_byte_std']:.4f} | {delta} | "
            f"{row['train_tokens_per_second_mean']:,.0f} | {row['decode_ms_per_token_median']:.2f} |"
        )
    return header + "\n".join(lines) + "\n"


def plot_results(rows: list[dict], runs: dict, out_path: Path) -> None:
    """Left: held-out bits/byte against unique parameters (error bars: sd over seeds). Right: training
    loss against tokens, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, row in enumerate(rows):
        color = f"C{index}"
        left.errorbar(
            row["unique_parameters"] / 1e6,
            row["bits_per_byte_mean"],
            yerr=row["bits_per_byte_std"],
            fmt="o",
            color=color,
            capsize=4,
            label=row["label"],
        )
        curves = [r["loss_curve"] for r in runs[row["arm"]]]
        length = min(len(c) for c in curves)
        if length:
            tokens = [curves[0][i][0] / 1e3 for i in range(length)]
            mean = [statistics.fmean(c[i][1] for c in curves) for i in range(length)]
            right.plot(tokens, mean, color=color, linewidth=1.2, label=row["label"])
    left.set_xlabel("unique parameters (M)")
    left.set_ylabel("held-out bits per byte (lower is better)")
    left.set_title("Held-out bits/byte vs parameters")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.set_xlabel("training tokens (thousands)")
    right.set_ylabel("training loss (nats/token)")
    right.set_title("Training loss, mean over seeds")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    tail = [
        statistics.fmean(r["loss_curve"][-1][1] for r in runs[row["arm"]])
        for row in rows
        if runs[row["arm"]][0]["loss_curve"]
    ]
    if tail:  # zoom on the part of the curves where the arms separate
        right.set_ylim(min(tail) - 0.3, min(tail) + 2.0)
    figure.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}.png")
    try:
        figure.savefig(tmp, dpi=90)
        os.replace(tmp, out_path)
    finally:
        plt.close(figure)
        if tmp.exists():
            tmp.unlink()


def write_markdown_block(path: Path, block: str) -> None:
    """Put `block` between the results markers of `path` (created with just the block if missing), so the
    hand-written conclusions around it survive a re-run."""
    marked = f"{RESULTS_START}\n{block.rstrip()}\n{RESULTS_END}\n"
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if RESULTS_START in text and RESULTS_END in text:
            before, rest = text.split(RESULTS_START, 1)
            after = rest.split(RESULTS_END, 1)[1].lstrip("\n")
            atomic_write_text(path, before + marked + after)
            return
        atomic_write_text(path, text.rstrip() + "\n\n" + marked)
        return
    atomic_write_text(path, "# ShishuLM small-scale replication study\n\n" + marked)


def results_block(rows: list[dict], study: Study, settings: dict) -> str:
    r = rows[0]
    return (
        f"Setting: {settings['describe']}\n\n"
        + markdown_table(rows, study.seeds)
        + f"\nBits per byte over {r['held_out_tokens']:,} held-out tokens ({r['held_out_bytes']:,} bytes of the "
        f"Shakespeare validation works); KV bytes per token read from a real cache after a {study.decode_context}-token "
        f"prefill; decode latency is the median ms for one token at context {study.decode_context}, batch 1 "
        f"(tokens/s and latency are from a shared 2-core CPU: noisy). Plot: `ablations.png`; raw numbers: `ablations.json`.\n"
    )


# ---------------------------------------------------------------------------------------- main


def run_study(
    study: Study, output_dir: Path, results_dir: Path, overrides: list[str] = (), tokenizer_dir: Path | None = None
) -> dict:
    from modeling_shishu.training.runner import load_tokenizer

    if study.num_threads:
        torch.set_num_threads(study.num_threads)
    started = time.perf_counter()
    recipes = load_arm_recipes(study, output_dir, list(overrides))
    tokenizer_dir = tokenizer_dir or shakespeare_tokenizer(study.tokenizer_vocab_size)
    tokenizer = load_tokenizer(str(tokenizer_dir))
    check_parameter_matching(study, recipes, tokenizer)
    block_size = recipes[study.arms[0].name][1].max_length
    blocks = held_out_text_blocks(tokenizer, block_size, study.eval_blocks)
    byte_lengths = token_byte_lengths(tokenizer)

    runs = {arm.name: [] for arm in study.arms}
    for seed in study.seeds:  # seed-major: a partial study already holds every arm for the first seeds
        for arm in study.arms:
            model_args, data_args, train_args = recipes[arm.name]
            train_args = dataclasses.replace(train_args, output_dir=str(output_dir / arm.name / f"seed-{seed}"))
            logger.info("arm %s, init seed %d", arm.name, seed)
            summary = train_arm(model_args, data_args, train_args, seed, tokenizer_dir)
            result = measure_run(Path(train_args.output_dir), summary, study, blocks, byte_lengths)
            result["seed"] = seed
            runs[arm.name].append(result)
            logger.info(
                "arm %s seed %d: bits/byte %.4f, %s unique parameters",
                arm.name,
                seed,
                result["held_out"]["bits_per_byte"],
                f"{result['unique_parameters']:,}",
            )

    rows = aggregate(study, runs)
    for row in rows:
        row["held_out_tokens"] = runs[row["arm"]][0]["held_out"]["tokens"]
        row["held_out_bytes"] = runs[row["arm"]][0]["held_out"]["bytes"]
    parent_model, parent_data, parent_train = recipes[study.arms[0].name]
    settings = {
        "parent_shape": parent_model.config_overrides,
        "config_name": parent_model.config_name,
        "tokenizer": f"byte-level BPE, {len(tokenizer)} tokens, trained on the Shakespeare train split",
        "block_size": block_size,
        "steps": parent_train.max_steps,
        "tokens_per_step": parent_train.per_device_train_batch_size
        * parent_train.gradient_accumulation_steps
        * block_size,
        "learning_rate": parent_train.learning_rate,
        "data_seed": parent_train.seed,
        "init_seeds": study.seeds,
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "wall_seconds": time.perf_counter() - started,  # this invocation (finished runs are reused)
        "train_seconds_total": sum(r["train_seconds"] for per_seed in runs.values() for r in per_seed),
    }
    shape = ", ".join(f"{k}={v}" for k, v in parent_model.config_overrides.items())
    settings["describe"] = (
        f"parent = `{parent_model.config_name}` config resized to {shape}; {settings['tokenizer']}; "
        f"{settings['steps']} steps x {settings['tokens_per_step']:,} tokens "
        f"({rows[0]['train_tokens']:,} training tokens per run, identical batches for every run: data seed "
        f"{settings['data_seed']}); init seeds {study.seeds}; {settings['device']}, {settings['torch_threads']} threads; "
        f"training time summed over the {len(study.arms) * len(study.seeds)} runs "
        f"{settings['train_seconds_total'] / 60:.1f} min."
    )
    results = {"settings": settings, "arms": rows, "runs": runs}
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results_dir / "ablations.json", results)
    plot_results(rows, runs, results_dir / "ablations.png")
    write_markdown_block(results_dir / "ablations.md", results_block(rows, study, settings))
    logger.info("study finished in %.1f min: %s", settings["wall_seconds"] / 60, results_dir / "ablations.md")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--study", default=str(Path(__file__).with_name("study.yaml")), help="Study file (arms, seeds, measurements)."
    )
    parser.add_argument(
        "--output_dir", default="outputs/ablations", help="Training runs: <output_dir>/<arm>/seed-<s>/."
    )
    parser.add_argument(
        "--results_dir", default=str(REPO_ROOT / "docs"), help="Where ablations.{json,png,md} are written."
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="Init seeds (overrides the study file).")
    parser.add_argument(
        "--tokenizer", help="Tokenizer folder instead of the study's Shakespeare BPE (byte-level BPE)."
    )
    parser.add_argument(
        "overrides",
        nargs=argparse.REMAINDER,
        help="After `--`: recipe overrides applied to every arm, e.g. -- --max_steps 20",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    overrides = args.overrides[1:] if args.overrides[:1] == ["--"] else args.overrides
    try:
        study = Study.from_yaml(args.study)
        if args.seeds:
            study.seeds = args.seeds
            study.check()
        run_study(
            study,
            Path(args.output_dir),
            Path(args.results_dir),
            overrides,
            Path(args.tokenizer) if args.tokenizer else None,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"run_study: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
