"""Records that travel with a published checkpoint name models by Hub id or folder name, never by this
machine's paths.

A run records the folders it read (`conversion.json`'s parent, `training_config.json`'s teacher, the
evaluation's command and model arguments). Before a folder is published, `publish_records` rewrites every
absolute path in those JSON files: an offline parent's cache folder becomes the Hub id it was fetched from,
any other folder its final name (`io_utils.final_name`).
"""

import json
import os
import shlex
from pathlib import Path

from ..io_utils import atomic_write_json, final_name


# JSON records of a checkpoint folder that may name local folders
RECORD_FILES = ("conversion.json", "training_config.json", "training_summary.json", "eval_results.json", "export.json")


def public_name(path: str) -> str:
    """The name under which a local folder is known to others: the Hub id it was fetched from, or its name."""
    fetch_record = Path(path) / "fetch.json"
    if fetch_record.is_file():
        try:
            hub_id = json.loads(fetch_record.read_text(encoding="utf-8")).get("hub_id")
        except (OSError, ValueError):
            hub_id = None
        if hub_id:
            return hub_id
    return final_name(path)


def _is_local_path(text: str) -> bool:
    return os.path.isabs(text) and "\n" not in text


def public_value(value):
    """`value` (any JSON value) with every absolute path in it replaced by its public name; a command line
    keeps its shape, with only its path words replaced."""
    if isinstance(value, dict):
        return {key: public_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [public_value(item) for item in value]
    if not isinstance(value, str) or os.sep not in value:
        return value
    if _is_local_path(value) and " " not in value:
        return public_name(value)
    try:
        words = shlex.split(value)
    except ValueError:
        return value
    if len(words) > 1 and any(_is_local_path(word) for word in words):
        return shlex.join(public_name(word) if _is_local_path(word) else word for word in words)
    return value


def local_paths(value) -> list[str]:
    """The absolute paths `value` (any JSON value) still holds, as they appear."""
    if isinstance(value, dict):
        return [path for item in value.values() for path in local_paths(item)]
    if isinstance(value, list):
        return [path for item in value for path in local_paths(item)]
    if not isinstance(value, str) or os.sep not in value:
        return []
    if _is_local_path(value) and " " not in value:
        return [value]
    try:
        return [word for word in shlex.split(value) if _is_local_path(word)]
    except ValueError:
        return []


def publish_records(folder: str | os.PathLike) -> list[str]:
    """Rewrite the folder's JSON records with public names; returns the files that changed."""
    changed = []
    for name in RECORD_FILES:
        path = Path(folder) / name
        if not path.is_file():
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        public = public_value(record)
        if public != record:
            atomic_write_json(path, public)
            changed.append(name)
    return changed


def unpublished_paths(folder: str | os.PathLike) -> dict[str, list[str]]:
    """{record file: the absolute paths it names} for the folder's JSON records that still name local folders."""
    found = {}
    for name in RECORD_FILES:
        path = Path(folder) / name
        if path.is_file():
            try:
                paths = local_paths(json.loads(path.read_text(encoding="utf-8")))
            except ValueError:
                continue
            if paths:
                found[name] = paths
    return found


__all__ = ["local_paths", "public_name", "public_value", "publish_records", "unpublished_paths"]
