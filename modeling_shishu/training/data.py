"""Text corpora for causal-LM training: loading, tokenization, packing into fixed-length blocks, and a data
order that is a pure function of (seed, step), so that a resumed run sees exactly the batches an
uninterrupted run would have seen.

Documents are tokenized without special tokens and joined with the tokenizer's EOS token, then cut into
blocks of `max_length` tokens (the remainder is dropped). Two sources feed the training loop:

- `ShuffledBatches` over an in-memory `PackedBlocks` tensor (local files, the offline Shakespeare corpus,
  moderate Hub datasets): every epoch is a seeded permutation of the blocks, and the blocks of step `s`,
  micro-batch `m`, rank `r` are computed directly.
- `StreamingBatches` over a `datasets` streaming corpus (large Hub corpora): each rank packs its own shard
  of documents in order; resuming replays the stream up to the checkpointed position.
"""

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import torch


logger = logging.getLogger(__name__)

OFFLINE_TEXT_CORPORA = ("shakespeare", "sharegpt")
_LOADER_BY_SUFFIX = {
    ".txt": "text",
    ".text": "text",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}
# Tokenize documents in batches of at most this many documents or characters: large enough for the fast
# tokenizer's parallelism, small enough that a capped run (max_train_samples) stops reading early.
_TOKENIZE_BATCH_DOCUMENTS = 64
_TOKENIZE_BATCH_CHARS = 100_000


# ------------------------------------------------------------------------------------------- loading


def offline_texts(name: str, split: str) -> list[str]:
    """The documents of an offline corpus from the package registry: `shakespeare` (split by work) or `sharegpt`
    (conversations rendered as ChatML, split by position; research-only licence)."""
    from .. import assets

    readers = {
        "shakespeare": (assets.shakespeare_texts, assets.SHAKESPEARE_SPLITS),
        "sharegpt": (assets.sharegpt_texts, assets.SHAREGPT_SPLITS),
    }
    read, splits = readers[name]
    if split not in splits:
        raise ValueError(f"the {name} corpus has splits {', '.join(splits)}, not {split!r}")
    return read(split)


def load_documents(data_args, split: str, streaming: bool | None = None):
    """Return the documents of `split` as a `datasets.Dataset` (or `IterableDataset` when streaming).

    `data_args.dataset_name` is an offline corpus (`OFFLINE_TEXT_CORPORA`, from the package registry), a Hub
    dataset id, or a `datasets` loader name (`text`, `json`, ...) used with local files; `dataset_mixture`
    mixes several of them. Offline corpora and mixtures, not streamed, are plain lists of `{text_column: text}`
    rows and need no `datasets`.
    """
    streaming = data_args.streaming if streaming is None else streaming
    files = data_args.train_files if split == data_args.dataset_train_split else data_args.eval_files
    rows = None
    if not files and data_args.dataset_mixture:
        rows = mixture_rows(data_args, split)
    elif not files and data_args.dataset_name in OFFLINE_TEXT_CORPORA:
        rows = [{data_args.text_column: text} for text in offline_texts(data_args.dataset_name, split)]
    if rows is not None:
        if not streaming:
            return rows
        import datasets

        return datasets.Dataset.from_list(rows).to_iterable_dataset()

    import datasets

    if files:
        missing = [f for f in files if not Path(f).exists()]
        if missing:
            raise FileNotFoundError(f"data file(s) not found: {', '.join(missing)}")
        if all(Path(f).is_file() and Path(f).stat().st_size == 0 for f in files):
            raise ValueError(f"split {split!r} is empty: {', '.join(files)} hold no data")
        suffixes = {Path(f).suffix.lower() for f in files}
        loaders = {_LOADER_BY_SUFFIX.get(s) for s in suffixes}
        if None in loaders or len(loaders) != 1:
            raise ValueError(
                f"data files must share one of the suffixes {sorted(_LOADER_BY_SUFFIX)}; got {sorted(suffixes)}"
            )
        dataset = datasets.load_dataset(
            loaders.pop(), data_files={split: list(files)}, split=split, streaming=streaming
        )
    elif data_args.dataset_name:
        try:
            dataset = datasets.load_dataset(
                data_args.dataset_name, data_args.dataset_config, split=split, streaming=streaming
            )
        except ValueError as error:  # datasets raises ValueError for an unknown split
            raise ValueError(f"dataset {data_args.dataset_name!r} has no split {split!r}: {error}") from error
    else:
        raise ValueError(f"no data for split {split!r}: set dataset_name or the split's files")

    columns = dataset.column_names
    if columns is not None and data_args.text_column not in columns:
        raise ValueError(
            f"dataset {data_args.dataset_name or files} has no column {data_args.text_column!r} "
            f"(columns: {', '.join(columns)}); set text_column"
        )
    return dataset


def mixture_rows(data_args, split: str) -> list[dict]:
    """The documents of a `dataset_mixture` {corpus: fraction}: a seeded `fraction` of each corpus's documents
    of `split` (as alignment-handbook's mixer does), the corpora's documents shuffled together."""
    column = data_args.text_column
    texts = []
    for name, fraction in data_args.dataset_mixture.items():
        if name in OFFLINE_TEXT_CORPORA:
            documents = offline_texts(name, split)
        else:
            import datasets

            try:
                dataset = datasets.load_dataset(name, split=split)
            except ValueError as error:
                raise ValueError(f"dataset {name!r} of dataset_mixture has no split {split!r}: {error}") from error
            if column not in dataset.column_names:
                raise ValueError(f"dataset {name!r} of dataset_mixture has no column {column!r}")
            documents = dataset[column]
        order = torch.randperm(len(documents), generator=torch.Generator().manual_seed(0)).tolist()
        texts += [documents[i] for i in order[: round(fraction * len(documents))]]
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(1)).tolist()
    return [{column: texts[i]} for i in order]


def iter_token_ids(documents, tokenizer, text_column: str) -> Iterator[list[int]]:
    """Token ids of each document followed by the EOS token (the document separator in packed blocks)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token: packing needs one to separate documents")
    eos = tokenizer.eos_token_id
    batch, chars = [], 0
    for document in documents:
        text = document[text_column]
        if not text:
            continue
        batch.append(text)
        chars += len(text)
        if len(batch) >= _TOKENIZE_BATCH_DOCUMENTS or chars >= _TOKENIZE_BATCH_CHARS:
            yield from _encode_with_eos(tokenizer, batch, eos)
            batch, chars = [], 0
    if batch:
        yield from _encode_with_eos(tokenizer, batch, eos)


def _encode_with_eos(tokenizer, texts: list[str], eos: int) -> Iterator[list[int]]:
    # Documents are longer than the model's context on purpose: packing cuts them into blocks.
    for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
        yield list(ids) + [eos]


# ------------------------------------------------------------------------------------------- packing


class PackedBlocks:
    """Documents packed into a `(num_blocks, block_size)` tensor of token ids."""

    def __init__(self, blocks: torch.Tensor, num_tokens: int):
        self.blocks = blocks
        self.num_tokens = num_tokens  # tokens read, including the dropped tail

    def __len__(self) -> int:
        return self.blocks.shape[0]

    @property
    def block_size(self) -> int:
        return self.blocks.shape[1]

    @classmethod
    def from_documents(
        cls,
        documents,
        tokenizer,
        text_column: str,
        block_size: int,
        max_blocks: int | None = None,
        name: str = "dataset",
    ) -> "PackedBlocks":
        """Tokenize and pack `documents`; stops reading once `max_blocks` blocks are full."""
        needed = None if max_blocks is None else max_blocks * block_size
        chunks, total = [], 0
        for ids in iter_token_ids(documents, tokenizer, text_column):
            chunks.append(torch.tensor(ids, dtype=torch.int64))
            total += len(ids)
            if needed is not None and total >= needed:
                break
        if total == 0:
            raise ValueError(f"{name} is empty: no text in column {text_column!r}")
        num_blocks = total // block_size
        if max_blocks is not None:
            num_blocks = min(num_blocks, max_blocks)
        if num_blocks == 0:
            raise ValueError(
                f"{name} is too small: {total} tokens do not fill one block of max_length={block_size} tokens"
            )
        flat = torch.cat(chunks)[: num_blocks * block_size]
        return cls(flat.view(num_blocks, block_size).contiguous(), total)


class ShuffledBatches:
    """Which blocks each rank trains on at each step, as a pure function of (seed, step).

    The global sample stream is the concatenation of seeded permutations of the blocks (epoch 0, 1, ...).
    Step `s` consumes `batch_size * gradient_accumulation_steps * world_size` samples of it: micro-batch
    `m` of rank `r` takes `batch_size` consecutive samples at position
    `((s * gradient_accumulation_steps + m) * world_size + r) * batch_size`. Resuming at step `s` needs
    nothing but `s`.
    """

    def __init__(
        self,
        data: PackedBlocks,
        batch_size: int,
        gradient_accumulation_steps: int,
        world_size: int,
        rank: int,
        seed: int,
    ):
        self.data = data
        self.batch_size = batch_size
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self._permutations: dict[int, torch.Tensor] = {}
        if len(data) < batch_size * world_size:
            raise ValueError(
                f"training data is too small: {len(data)} blocks of {data.block_size} tokens, but one micro-batch "
                f"needs per_device_train_batch_size x processes = {batch_size} x {world_size} blocks"
            )

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.gradient_accumulation_steps * self.world_size

    def steps_per_epoch(self) -> float:
        return len(self.data) / self.samples_per_step

    def epoch_at(self, step: int) -> float:
        return step * self.samples_per_step / len(self.data)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._permutations:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._permutations = {epoch: torch.randperm(len(self.data), generator=generator)}
        return self._permutations[epoch]

    def sample_indices(self, step: int, micro: int) -> list[int]:
        start = ((step * self.gradient_accumulation_steps + micro) * self.world_size + self.rank) * self.batch_size
        indices = []
        for position in range(start, start + self.batch_size):
            epoch, offset = divmod(position, len(self.data))
            indices.append(int(self._permutation(epoch)[offset]))
        return indices

    def micro_batches(self, step: int) -> list[torch.Tensor]:
        return [self.data.blocks[self.sample_indices(step, m)] for m in range(self.gradient_accumulation_steps)]

    def start_at(self, step: int) -> None:
        """Nothing to replay: batches are computed from the step."""


class StreamingBatches:
    """Micro-batches packed on the fly from a streaming corpus, each rank reading its own shard.

    Epochs restart the stream with `set_epoch` (a new shuffle of the buffer). Steps must be requested in
    order; `start_at(step)` replays the stream up to `step`, which reproduces the uninterrupted order
    exactly (at the cost of re-tokenizing what was skipped).
    """

    def __init__(
        self,
        documents,
        tokenizer,
        text_column: str,
        block_size: int,
        batch_size: int,
        gradient_accumulation_steps: int,
        world_size: int,
        rank: int,
        seed: int,
        shuffle_buffer_size: int,
    ):
        from datasets.distributed import split_dataset_by_node

        if world_size > 1:
            documents = split_dataset_by_node(documents, rank=rank, world_size=world_size)
        if shuffle_buffer_size > 0:
            documents = documents.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
        self.documents = documents
        self.tokenizer = tokenizer
        self.text_column = text_column
        self.block_size = block_size
        self.batch_size = batch_size
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.world_size = world_size
        self.next_step = 0
        self.epoch = 0
        self._blocks = self._iter_blocks()

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.gradient_accumulation_steps * self.world_size

    def epoch_at(self, step: int) -> float:
        return float(self.epoch)

    def _iter_blocks(self) -> Iterator[torch.Tensor]:
        buffer: list[int] = []
        while True:
            if hasattr(self.documents, "set_epoch"):
                self.documents.set_epoch(self.epoch)
            produced = False
            for ids in iter_token_ids(self.documents, self.tokenizer, self.text_column):
                buffer.extend(ids)
                while len(buffer) >= self.block_size:
                    produced = True
                    yield torch.tensor(buffer[: self.block_size], dtype=torch.int64)
                    del buffer[: self.block_size]
            if not produced:
                raise ValueError(
                    f"the streaming corpus (this rank's shard) holds fewer than {self.block_size} tokens: "
                    f"not one block of max_length"
                )
            self.epoch += 1

    def _next_batch(self) -> torch.Tensor:
        return torch.stack([next(self._blocks) for _ in range(self.batch_size)])

    def micro_batches(self, step: int) -> list[torch.Tensor]:
        if step != self.next_step:
            raise RuntimeError(
                f"streaming batches must be read in order: asked for step {step}, next is {self.next_step}"
            )
        self.next_step += 1
        return [self._next_batch() for _ in range(self.gradient_accumulation_steps)]

    def start_at(self, step: int) -> None:
        if step:
            logger.info("replaying the stream up to step %d", step)
        while self.next_step < step:
            self.micro_batches(self.next_step)


def eval_batches(data: PackedBlocks, batch_size: int, world_size: int, rank: int):
    """Yield `(blocks, weight)` for this rank's share of the held-out blocks.

    Every rank yields the same number of batches (collectives in FSDP forwards need that); padding rows
    repeat the last block with weight 0.
    """
    per_rank = math.ceil(len(data) / world_size)
    positions = list(range(rank, per_rank * world_size, world_size))
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        indices = [min(p, len(data) - 1) for p in chunk]
        weights = torch.tensor([1.0 if p < len(data) else 0.0 for p in chunk])
        yield data.blocks[indices], weights


def check_tokenizer_fits_model(tokenizer, config, max_length: int | None = None) -> None:
    """Refuse a tokenizer whose ids do not fit the model's embedding, or blocks longer than its positions."""
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {config.vocab_size}: "
            f"token ids would index past the embedding. Use the model's own tokenizer."
        )
    if max_length is not None and max_length > config.max_position_embeddings:
        raise ValueError(
            f"max_length={max_length} is above the model's max_position_embeddings={config.max_position_embeddings}"
        )
