"""Running the whole study: every (arm, init seed) trained or reused, measured, then the JSON, plot and table.

python recipes/ablations/run_study.py --study recipes/ablations/study.yaml
"""

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import torch

from ...io_utils import atomic_write_json
from .measure import held_out_text_blocks, measure_run, train_arm
from .report import aggregate, plot_results, results_block, write_markdown_block
from .study import Study, check_parameter_matching, load_arm_recipes
from .tokenizer import shakespeare_tokenizer, token_byte_lengths


logger = logging.getLogger(__name__)


def run_study(
    study: Study, output_dir: Path, results_dir: Path, overrides: list[str] = (), tokenizer_dir: Path | None = None
) -> dict:
    """Train (or reuse) and measure every (arm, init seed), then write `results_dir/ablations.{json,png,md}`."""
    from ..runner import load_tokenizer

    if study.num_threads:
        torch.set_num_threads(study.num_threads)
    started = time.perf_counter()
    recipes = load_arm_recipes(study, output_dir, list(overrides))
    tokenizer_dir = tokenizer_dir or shakespeare_tokenizer(study.tokenizer_vocab_size)
    tokenizer = load_tokenizer(str(tokenizer_dir))
    check_parameter_matching(study, recipes, tokenizer)
    runs = train_and_measure_arms(study, recipes, output_dir, tokenizer, tokenizer_dir)

    rows = aggregate(study, runs)
    for row in rows:
        row["held_out_tokens"] = runs[row["arm"]][0]["held_out"]["tokens"]
        row["held_out_bytes"] = runs[row["arm"]][0]["held_out"]["bytes"]
    settings = study_settings(study, recipes, tokenizer, rows, runs, started)
    results = {"settings": settings, "arms": rows, "runs": runs}
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results_dir / "ablations.json", results)
    plot_results(rows, runs, results_dir / "ablations.png")
    write_markdown_block(results_dir / "ablations.md", results_block(rows, study, settings))
    logger.info("study finished in %.1f min: %s", settings["wall_seconds"] / 60, results_dir / "ablations.md")
    return results


def train_and_measure_arms(study: Study, recipes: dict, output_dir: Path, tokenizer, tokenizer_dir: Path) -> dict:
    """Arm name -> one measured result per init seed, in the order of `study.seeds`."""
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
    return runs


def study_settings(study: Study, recipes: dict, tokenizer, rows: list[dict], runs: dict, started: float) -> dict:
    """What the results were measured with, and the one-paragraph description the report starts with."""
    parent_model, parent_data, parent_train = recipes[study.arms[0].name]
    block_size = parent_data.max_length
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
    return settings


def main(argv: list[str] | None = None) -> int:
    """`recipes/ablations/run_study.py`: paths are relative to the working directory (the repository root)."""
    parser = argparse.ArgumentParser(
        description="Small-scale replication study: from-scratch pretraining of ShishuLM layouts on the same tokens."
    )
    parser.add_argument(
        "--study", default="recipes/ablations/study.yaml", help="Study file (arms, seeds, measurements)."
    )
    parser.add_argument(
        "--output_dir", default="outputs/ablations", help="Training runs: <output_dir>/<arm>/seed-<s>/."
    )
    parser.add_argument("--results_dir", default="docs", help="Where ablations.{json,png,md} are written.")
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
