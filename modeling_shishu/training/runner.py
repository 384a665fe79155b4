"""Plumbing shared by the stage entry points: resolving model names, building the packed data, claiming
the run folder and reporting bad input as one clear line."""

import functools
import logging
import math
import sys

from ..loading import remote_code_consent, resolve_checkpoint
from .checkpointing import RunDirectory
from .data import PackedBlocks, ShuffledBatches, StreamingBatches, load_documents


logger = logging.getLogger(__name__)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    with remote_code_consent(name_or_path):
        return AutoTokenizer.from_pretrained(
            resolve_checkpoint(name_or_path, trust_remote_code), trust_remote_code=trust_remote_code
        )


def build_training_data(data_args, train_args, tokenizer, accelerator):
    """Packed training batches for this rank, held-out blocks (or None), and the number of optimizer steps."""
    world, rank = accelerator.num_processes, accelerator.process_index
    source = data_args.dataset_name
    if data_args.train_files:
        source = ", ".join(data_args.train_files)
    elif data_args.dataset_mixture:
        source = " + ".join(f"{name} ({fraction:g})" for name, fraction in data_args.dataset_mixture.items())
    if data_args.streaming:
        if train_args.max_steps < 1:
            raise ValueError("a streaming corpus has no known length: set max_steps")
        documents = load_documents(data_args, data_args.dataset_train_split, streaming=True)
        train_batches = StreamingBatches(
            documents,
            tokenizer,
            data_args.text_column,
            data_args.max_length,
            train_args.per_device_train_batch_size,
            train_args.gradient_accumulation_steps,
            world,
            rank,
            train_args.seed,
            data_args.shuffle_buffer_size,
        )
    else:
        with accelerator.main_process_first():  # a Hub download or dataset cache is built once
            documents = load_documents(data_args, data_args.dataset_train_split)
        blocks = PackedBlocks.from_documents(
            documents,
            tokenizer,
            data_args.text_column,
            data_args.max_length,
            max_blocks=data_args.max_train_samples,
            name=f"training split {data_args.dataset_train_split!r} of {source}",
        )
        train_batches = ShuffledBatches(
            blocks,
            train_args.per_device_train_batch_size,
            train_args.gradient_accumulation_steps,
            world,
            rank,
            train_args.seed,
        )
        logger.info("training data: %d blocks of %d tokens from %s", len(blocks), blocks.block_size, source)

    eval_data = None
    eval_split = data_args.dataset_test_split or ("validation" if data_args.eval_files else None)
    if eval_split is not None and (data_args.eval_files or not data_args.train_files):
        with accelerator.main_process_first():
            documents = load_documents(data_args, eval_split)
        eval_data = PackedBlocks.from_documents(
            documents,
            tokenizer,
            data_args.text_column,
            data_args.max_length,
            max_blocks=data_args.max_eval_samples,
            name=f"held-out split {eval_split!r} of {source}",
        )
        logger.info("held-out data: %d blocks", len(eval_data))

    if train_args.max_steps > 0:
        total_steps = train_args.max_steps
    else:
        total_steps = max(1, math.ceil(train_args.num_train_epochs * train_batches.steps_per_epoch()))
    return train_batches, eval_data, total_steps


def open_run(stage: str, train_args, *fingerprinted_args):
    """The accelerator, the checked run folder, the checkpoint to continue from (None: step 0), and whether
    output_dir already holds this run finished (then there is nothing to train) of a pretrain / distill run."""
    from .arguments import fingerprint_fields
    from .trainer import make_accelerator, setup_logging

    accelerator = make_accelerator(train_args)
    setup_logging(accelerator)
    run_dir = RunDirectory(train_args.output_dir, stage, fingerprint_fields(*fingerprinted_args, train_args))
    run_dir.check(train_args.overwrite_output_dir)
    checkpoint = run_dir.checkpoint_to_resume(train_args.resume_from_checkpoint, train_args.overwrite_output_dir)
    if train_args.resume_from_checkpoint is None and not train_args.overwrite_output_dir and run_dir.is_finished():
        logger.info("%s already holds the finished run: nothing to train", run_dir.path)
        return accelerator, run_dir, None, True
    if checkpoint is not None:
        logger.info("continuing this run from %s", checkpoint)
    return accelerator, run_dir, checkpoint, False


def push_final_model(accelerator, run_dir: RunDirectory, repo_id: str | None, private: bool = False) -> int:
    """`push_to_hub`: the main process pushes `final/` to `repo_id` (None: no push) through the checks of
    `shishu push`. Returns the exit code: 1 when the upload itself failed (the run's outputs stay as they are)."""
    from ..release.public_records import publish_records
    from ..release.push import UploadError, push_folder

    code = 0
    if repo_id is not None and accelerator.is_main_process:
        publish_records(run_dir.final_dir)  # the teacher and data by Hub id or name, not this machine's paths
        try:
            push_folder(
                run_dir.final_dir,
                repo_id,
                private=private,
                require_card=False,
                commit_message=f"Upload the {run_dir.stage} run {run_dir.path.name}",
                log=logger.info,
            )
        except UploadError as error:
            logger.error("push_to_hub: %s; push %s later with `shishu push`", error, run_dir.final_dir)
            code = 1
    accelerator.wait_for_everyone()
    return code


def hub_repo_id(train_args) -> str | None:
    return train_args.hub_model_id if train_args.push_to_hub else None


def claim_run_directory(accelerator, run_dir: RunDirectory, train_args) -> None:
    """Main process writes `run.json` (after every rank's check passed); the others wait for it."""
    run_dir.claim_on_all_ranks(
        train_args.overwrite_output_dir, accelerator.is_main_process, accelerator.wait_for_everyone
    )


def report_bad_input(stage: str):
    """Decorator for a stage's `main`: bad input (ValueError, missing or clashing files) is printed as one
    line naming the problem, with exit code 2, instead of a traceback."""

    def decorate(main):
        @functools.wraps(main)
        def wrapper(argv=None):
            try:
                return main(argv) or 0
            except (ValueError, FileNotFoundError, FileExistsError) as error:
                print(f"{stage}: error: {error}", file=sys.stderr)
                return 2

        return wrapper

    return decorate
