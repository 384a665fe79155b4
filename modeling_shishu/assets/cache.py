"""The cache every offline asset is built into once: its location, its inter-process locks, and building an
entry in a temporary folder that is renamed into place when complete."""

import os
from pathlib import Path

from filelock import FileLock

from ..io_utils import atomic_directory, remove_stale_temporaries


def cache_dir() -> Path:
    """`$SHISHU_CACHE` if set, else `$XDG_CACHE_HOME/shishu`, else `~/.cache/shishu`."""
    if os.environ.get("SHISHU_CACHE"):
        return Path(os.environ["SHISHU_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "shishu"
    return Path.home() / ".cache" / "shishu"


def cache_lock(name: str) -> FileLock:
    """An inter-process lock for one cache entry; the OS releases it if the holder dies."""
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock_dir / f"{name}.lock"))


def build_once(folder: Path, lock_name: str, marker: str, build) -> Path:
    """Run `build(tmp_dir)` once and rename its result to `folder`, under an inter-process lock.

    `marker` is the file written last by `build`: a folder holding it is complete.
    """
    if (folder / marker).is_file():
        return folder
    with cache_lock(lock_name):
        if not (folder / marker).is_file():
            remove_stale_temporaries(folder)
            with atomic_directory(folder, overwrite=folder.exists()) as tmp:
                build(tmp)
    return folder
