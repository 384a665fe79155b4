"""Plumbing shared by the stage entry points: resolving model names, building the packed data, holding and
claiming the run folder, and reporting bad input as one clear line."""

import contextlib
import functools
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from ..io_utils import OutputError, claim_output
from ..loading import remote_code_consent, resolve_checkpoint
from .data import PackedBlocks, ShuffledBatches, StreamingBatches, load_documents
from .run_directory import RunDirectory


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


@contextlib.contextmanager
def open_run(stage: str, train_args, *fingerprinted_args):
    """`open_run_directory` for a pretrain / distill run, with its accelerator and logging set up first. Yields
    (accelerator, run_dir, checkpoint, finished)."""
    from .arguments import fingerprint_fields
    from .trainer import make_accelerator, setup_logging

    accelerator = make_accelerator(train_args)
    setup_logging(accelerator)
    with open_run_directory(
        accelerator,
        stage,
        train_args.output_dir,
        fingerprint_fields(*fingerprinted_args, train_args),
        overwrite=train_args.overwrite_output_dir,
        requested=train_args.resume_from_checkpoint,
    ) as (run_dir, checkpoint, finished):
        yield accelerator, run_dir, checkpoint, finished


@contextlib.contextmanager
def open_run_directory(state, stage: str, output_dir, fields: dict, overwrite: bool, requested=None):
    """Hold the run folder for the whole run, check it, and find where to continue: yields the `RunDirectory`,
    the checkpoint to continue from (None: step 0), and whether the folder already holds this run finished
    (then there is nothing to train).

    `state` is the accelerator (or accelerate's `PartialState`) of the run: its main process holds the folder's
    OS lock (`claim_output`), so a second run into it is refused while this one, or an orphaned worker of it,
    is alive; the other ranks of this run do not take it.
    """
    with _claim_on_main_process(state, output_dir):
        run_dir = RunDirectory(output_dir, stage, fields)
        run_dir.check(overwrite)
        checkpoint = run_dir.checkpoint_to_resume(requested, overwrite)
        finished = requested is None and not overwrite and run_dir.is_finished()
        if finished:
            logger.info("%s already holds the finished run: nothing to train", run_dir.path)
            checkpoint = None
        elif checkpoint is not None:
            logger.info("continuing this run from %s", checkpoint)
        yield run_dir, checkpoint, finished


@contextlib.contextmanager
def _claim_on_main_process(state, output_dir):
    """The main process claims `output_dir`; a refusal is raised on every rank, so none waits for the others."""
    from accelerate.utils import broadcast_object_list

    with contextlib.ExitStack() as stack:
        refusal = [None]
        if state.is_main_process:
            try:
                stack.enter_context(claim_output(output_dir, overwrite=True))
            except OutputError as error:
                refusal = [str(error)]
        if state.num_processes > 1:
            broadcast_object_list(refusal, from_process=0)
        if refusal[0] is not None:
            raise OutputError(refusal[0])
        yield


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


def train_and_publish(trainer, checkpoint, train_args) -> int:
    """Train (from `checkpoint` when resuming), push the final folder when the recipe asks for it, close the
    trackers; the exit code of the push (0 when there is nothing to push)."""
    accelerator = trainer.accelerator
    code = 0
    if trainer.train(checkpoint) is not None:  # None: stopped early by stop_after_steps
        code = push_final_model(
            accelerator, trainer.run_dir, hub_repo_id(train_args), bool(train_args.hub_private_repo)
        )
    accelerator.end_training()  # closes the trackers and the process group
    return code


def hub_repo_id(train_args) -> str | None:
    return train_args.hub_model_id if train_args.push_to_hub else None


def claim_run_directory(accelerator, run_dir: RunDirectory, train_args) -> None:
    """Main process writes `run.json` (after every rank's check passed); the others wait for it."""
    run_dir.claim_on_all_ranks(
        train_args.overwrite_output_dir, accelerator.is_main_process, accelerator.wait_for_everyone
    )


def report_bad_input(stage: str):
    """Decorator for a stage's `main`: bad input (ValueError, missing or clashing files, a run folder held by
    another run) is printed as one line naming the problem, with exit code 2, instead of a traceback."""

    def decorate(main):
        @functools.wraps(main)
        def wrapper(argv=None):
            try:
                return main(argv) or 0
            except (ValueError, FileNotFoundError, FileExistsError, OutputError) as error:
                line = f"{stage}: error: {error}"
                print(line, file=sys.stderr)
                _record_for_the_launcher(line)
                return 2

        return wrapper

    return decorate


def _record_for_the_launcher(line: str) -> None:
    """Under `accelerate launch` (torch elastic), hand the error line to the launcher through the worker's error
    file: its closing failure report then shows the line as the root cause instead of a link to the docs."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        with contextlib.suppress(OSError):
            Path(error_file).write_text(json.dumps({"message": line, "timestamp": int(time.time())}))
