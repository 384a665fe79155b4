"""Writing outputs so that nothing half-written is ever left behind: build in a temporary sibling,
then rename into place."""

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path


def _default_mode(mode: int) -> int:
    """`mode` under the process umask: mkdtemp/mkstemp create private (0700/0600) entries, but a
    finished output should get the permissions an ordinary mkdir/open would have given it."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def atomic_directory(final_path: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary directory next to `final_path`; on success it is renamed to `final_path`.

    On an exception the temporary directory is removed and `final_path` is untouched. With
    `overwrite=True` an existing `final_path` is replaced (the old one is removed only after the new
    one is complete).
    """
    final_path = Path(final_path)
    if final_path.exists() and not overwrite:
        raise FileExistsError(f"{final_path} already exists (pass overwrite to replace it)")
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_path.name}.tmp-", dir=final_path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, _default_mode(0o777))
    if final_path.exists():
        old = final_path.with_name(f".{final_path.name}.old-{os.getpid()}")
        os.rename(final_path, old)
        os.rename(tmp, final_path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final_path)


_TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.tmp-[A-Za-z0-9_]+$")


def final_name(path: str | os.PathLike) -> str:
    """The name `path` has once complete: a temporary sibling of `atomic_directory` (`.NAME.tmp-XXXX`) is NAME,
    so what is written inside it can name the folder as users will see it."""
    name = Path(path).resolve().name
    match = _TEMPORARY_NAME.match(name)
    return match.group("name") if match else name


def final_path(path: str | os.PathLike) -> Path:
    """`path` with every temporary `atomic_directory` sibling in it named as it will be once complete."""
    parts = Path(path).parts
    return Path(*[(_TEMPORARY_NAME.match(part) or {"name": part})["name"] for part in parts]) if parts else Path(path)


@contextlib.contextmanager
def _atomic_file(path: Path):
    """Yield a temporary file path next to `path` (same suffix); on success it gets the umask
    permissions and is renamed to `path`, on an exception it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _default_mode(0o666))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_file(path: str | os.PathLike):
    """Yield a temporary file path next to `path`, renamed to `path` on success: for writers that take a
    file name (GGUF)."""
    return _atomic_file(Path(path))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and an atomic rename."""
    with _atomic_file(Path(path)) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_save_figure(figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure to `path` through a temporary file and an atomic rename, then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with _atomic_file(path) as tmp:
            figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(figure)
    return path
