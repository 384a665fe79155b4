"""Writing outputs so that nothing half-written is ever left behind: claim the output, build in a temporary
sibling, then rename into place."""

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path


class OutputError(RuntimeError):
    """An output that cannot be written: its location is not writable, or another live process writes it."""


# Outputs this process has claimed -> how many nested `claim_output` blocks hold them.
_claimed: dict[Path, int] = {}


def _try_lock(fd: int) -> bool:
    """Take an exclusive OS lock on `fd` without waiting; False if another process holds it. The OS drops
    the lock when its process dies, however it dies, so a killed writer never blocks the next one."""
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    return True


def _acquire(lock_file: Path, output: Path) -> int:
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(f"{output} is being written by another process (pid {holder}); wait for it to finish")
        try:
            same_file = os.path.samestat(os.fstat(fd), os.stat(lock_file))
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        # The previous holder removed the lock file between our open and our lock: lock the current one.
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Remove what a killed writer of `path` left next to it: `atomic_directory` / `atomic_file` temporaries
    (`.NAME.tmp-*`, `.STEM.tmp-*SUFFIX`) and a replaced folder not yet deleted (`.NAME.old-*`). Call only while
    holding `path`'s claim: then no live writer owns them."""
    path = Path(path)
    patterns = {f".{path.name}.tmp-*", f".{path.name}.old-*", f".{path.stem}.tmp-*{path.suffix}"}
    for pattern in patterns:
        for stale in path.parent.glob(pattern):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def check_writable(folder: str | os.PathLike) -> None:
    """Raise `OutputError` unless files can be created in the existing `folder` (tried with a temporary one)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputError(f"cannot write to {folder}: {error.strerror or error}") from None


def check_output_location(path: str | os.PathLike) -> None:
    """Raise `OutputError` unless `path` (a file or folder, perhaps not there yet) could be created: for outputs
    written at the end of a long run, checked before it starts."""
    path = Path(path).expanduser().absolute()
    existing = next(parent for parent in path.parents if parent.exists())
    if not existing.is_dir():
        raise OutputError(f"cannot write {path}: {existing} is a file, not a folder")
    check_writable(path if path.is_dir() else existing)


def _unwritable_reason(path: Path, error: OSError) -> str:
    existing = next(parent for parent in path.parents if parent.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    return f"{error.filename or existing}: {error.strerror or error}"


@contextlib.contextmanager
def claim_output(path: str | os.PathLike, overwrite: bool = False):
    """Hold the exclusive right to write `path` (a folder or a file) for the duration of the block.

    The claim is an OS lock on `.NAME.lock` next to `path`, holding the writer's pid: a second writer is
    refused with `OutputError` while the first is alive, and a killed writer's claim is taken over (with
    the temporaries it left behind removed). Take it before the long work: creating the lock file is also
    the check that the output location is writable, and an existing `path` is refused unless `overwrite`.
    Nested claims of one path in one process are allowed.
    """
    given = Path(path)
    path = given.expanduser().resolve()
    if path in _claimed:
        _claimed[path] += 1
        try:
            yield path
        finally:
            _claimed[path] -= 1
        return
    lock_file = path.parent / f".{path.name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(lock_file, given)
    except OSError as error:
        raise OutputError(f"cannot write {given}: {_unwritable_reason(path, error)}") from None
    try:
        if path.exists() and not overwrite:
            raise FileExistsError(f"{given} already exists (pass overwrite / --overwrite to replace it)")
        remove_stale_temporaries(path)
        _claimed[path] = 1
        try:
            yield path
        finally:
            del _claimed[path]
    finally:
        # Unlink before unlocking: a process waiting on the old file then sees it is gone and retries.
        with contextlib.suppress(OSError):
            os.unlink(lock_file)
        os.close(fd)


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
        if final_path.exists() and not overwrite:
            # Another writer finished first: keep its output rather than silently replacing it.
            raise FileExistsError(f"{final_path} appeared while it was being written (pass overwrite to replace it)")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finish_output(tmp)
    if final_path.exists():
        old = final_path.with_name(f".{final_path.name}.old-{os.getpid()}")
        os.rename(final_path, old)
        os.rename(tmp, final_path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final_path)


# Written by `tokenizer.save_pretrained` after a load from a local folder: they describe this machine's load, and a
# user's `from_pretrained` of the published folder would inherit them (offline mode from a Hub download).
MACHINE_LOCAL_TOKENIZER_KEYS = ("is_local", "local_files_only")


def finish_output(folder: str | os.PathLike) -> None:
    """Make a staged output folder what users should receive: the permissions an ordinary mkdir/open would give
    (transformers writes `model.safetensors` through a private temporary file, mode 0600) and tokenizer configs
    without this machine's loading flags."""
    folder = Path(folder)
    os.chmod(folder, _default_mode(0o777))
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            os.chmod(path, _default_mode(0o777))
        else:
            executable = path.stat().st_mode & 0o111
            os.chmod(path, _default_mode(0o777 if executable else 0o666))
            if path.name == "tokenizer_config.json":
                strip_machine_local_keys(path)


def strip_machine_local_keys(tokenizer_config: Path) -> None:
    config = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    if any(key in config for key in MACHINE_LOCAL_TOKENIZER_KEYS):
        for key in MACHINE_LOCAL_TOKENIZER_KEYS:
            config.pop(key, None)
        atomic_write_json(tokenizer_config, config)


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


def read_json_file(path: str | os.PathLike, what: str):
    """A JSON file's contents; a missing file is `FileNotFoundError`, an unparsable one `ValueError`, each naming
    `what` the file should be (e.g. "results file")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such {what}: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} {path} is not valid JSON: {error}") from None


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


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
