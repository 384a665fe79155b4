"""Run folders: what `output_dir` holds, which run it belongs to, and which of its checkpoints are complete.

A run folder holds:

    run.json                  stage + fingerprint of the settings that define the run
    checkpoint-<step>/        Hub-loadable model (config, remote code, tokenizer, model.safetensors)
                              + optimizer.safetensors, rng_state_<rank>.safetensors, trainer_state.json
    metrics.jsonl, loss_curve.png
    final/                    the Hub-ready result (use_cache on, generation config = tokenizer's eos)
    training_summary.json

A checkpoint whose files are damaged (`checkpoint_problem`) is skipped on resume, with a warning naming it.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

from ..io_utils import atomic_write_json


logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
CHECKPOINT_PREFIX = "checkpoint-"
FINAL_DIR = "final"
TRAINER_STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
SUMMARY_FILE = "training_summary.json"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def run_fingerprint(stage: str, config: dict) -> str:
    payload = json.dumps({"stage": stage, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


class RunDirectory:
    """One training run's output folder: refuses to mix runs, finds and rotates checkpoints."""

    def __init__(self, path: str | os.PathLike, stage: str, config: dict):
        self.path = Path(path)
        self.stage = stage
        self.config = json.loads(json.dumps(config, default=str))  # what run.json will hold
        self.fingerprint = run_fingerprint(stage, self.config)

    @property
    def final_dir(self) -> Path:
        return self.path / FINAL_DIR

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first (a checkpoint folder only ever appears complete)."""
        if not self.path.is_dir():
            return []
        found = []
        for child in self.path.iterdir():
            match = _CHECKPOINT_RE.match(child.name)
            if match and (child / TRAINER_STATE_FILE).is_file():
                found.append((int(match.group(1)), child))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        checkpoints = self.checkpoints()
        return checkpoints[-1][1] if checkpoints else None

    def is_finished(self) -> bool:
        return (self.final_dir / "config.json").is_file() and (self.path / SUMMARY_FILE).is_file()

    def check(self, overwrite: bool = False) -> None:
        """Refuse an `output_dir` that may not hold this run (read-only; every rank may call it).

        Raises `FileExistsError` when the folder holds a different run, or files that are not a run at all.
        A folder holding this run is accepted: the run continues there (`checkpoint_to_resume`).
        """
        if overwrite:
            return
        existing = self._read_run_file()
        if existing is None:
            if self.path.exists() and any(self.path.iterdir()):
                raise FileExistsError(
                    f"output_dir {self.path} is not empty and holds no {RUN_FILE}: it is not a ShishuLM run; "
                    f"choose an empty or new folder"
                )
            return
        if existing.get("fingerprint") != self.fingerprint or existing.get("stage") != self.stage:
            raise FileExistsError(
                f"output_dir {self.path} already holds a different run ({self._describe_difference(existing)}); "
                f"choose another output_dir, or pass --overwrite_output_dir to replace it"
            )

    def checkpoint_to_resume(self, requested: str | os.PathLike | bool | None = None, overwrite: bool = False):
        """The checkpoint a start continues from, checked before anything is trained.

        `requested` (`resume_from_checkpoint`) is a checkpoint folder, which must be complete and loadable, or
        True for the newest loadable checkpoint in this folder, which must exist. Unset, the newest loadable
        checkpoint of this run here is taken, as the alignment-handbook scripts do with `get_last_checkpoint`;
        None means starting from step 0. Damaged checkpoints (a truncated file, a missing trainer state) are
        skipped, each with one logged line saying why.
        """
        if overwrite:
            if requested is not None:
                raise ValueError("overwrite_output_dir starts the run over: drop it, or resume_from_checkpoint")
            return None
        if requested is None or requested is True:
            newest = self.newest_loadable_checkpoint()
            if requested is True and newest is None:
                raise FileNotFoundError(f"resume_from_checkpoint: {self.path} holds no complete checkpoint")
            return newest
        folder = Path(requested)
        if not (folder / TRAINER_STATE_FILE).is_file():
            raise FileNotFoundError(
                f"resume_from_checkpoint {folder} is not a complete checkpoint (no {TRAINER_STATE_FILE})"
            )
        problem = checkpoint_problem(folder, self.stage)
        if problem is not None:
            raise ValueError(f"resume_from_checkpoint {folder} cannot be loaded: {problem}")
        state = json.loads((folder / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
        if "fingerprint" in state and (state["fingerprint"] != self.fingerprint or state.get("stage") != self.stage):
            raise FileExistsError(
                f"resume_from_checkpoint {folder} belongs to a different run (fingerprint {state['fingerprint']}, this "
                f"recipe {self.fingerprint}); to start from its weights, load it as the model instead"
            )
        return folder

    def newest_loadable_checkpoint(self) -> Path | None:
        """The newest `checkpoint-<step>` folder that `checkpoint_problem` finds nothing wrong with."""
        if not self.path.is_dir():
            return None
        folders = sorted(
            (int(match.group(1)), child)
            for child in self.path.iterdir()
            if (match := _CHECKPOINT_RE.match(child.name)) and child.is_dir()
        )
        for _, folder in reversed(folders):
            problem = checkpoint_problem(folder, self.stage)
            if problem is None:
                return folder
            logger.warning("skipping the damaged checkpoint %s: %s", folder.name, problem)
        return None

    def claim(self, overwrite: bool) -> None:
        """Main process, after `check`: clear a replaced run, write `run.json`, drop stale temporaries."""
        if overwrite and self.path.exists():
            logger.warning("overwrite_output_dir: removing the previous run in %s", self.path)
            remove_tree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / RUN_FILE).is_file():
            atomic_write_json(
                self.path / RUN_FILE, {"stage": self.stage, "fingerprint": self.fingerprint, "config": self.config}
            )
        self.remove_stale_temporaries()

    def claim_on_all_ranks(self, overwrite: bool, is_main_process: bool, wait_for_everyone) -> None:
        """`claim` by the main process once every rank has run `check`; the others wait for `run.json`.

        Without the first barrier a slower rank would `check` after the claim and refuse the fresh
        `run.json` as "an unfinished run"."""
        wait_for_everyone()
        if is_main_process:
            self.claim(overwrite)
        wait_for_everyone()

    def _read_run_file(self) -> dict | None:
        run_file = self.path / RUN_FILE
        if not run_file.is_file():
            return None
        try:
            return json.loads(run_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise FileExistsError(f"{run_file} is not valid JSON ({error}); the folder holds a damaged run") from error

    def _describe_difference(self, existing: dict) -> str:
        if existing.get("stage") != self.stage:
            return f"a {existing.get('stage')!r} run, this is {self.stage!r}"
        old, new = existing.get("config", {}), self.config
        changed = [key for key in sorted(set(old) | set(new)) if old.get(key, "<unset>") != new.get(key, "<unset>")]
        shown = [f"{key}: {old.get(key, '<unset>')!r} there, {new.get(key, '<unset>')!r} now" for key in changed[:5]]
        more = f", and {len(changed) - 5} more" if len(changed) > 5 else ""
        return "; ".join(shown) + more if shown else "fingerprint differs"

    def remove_stale_temporaries(self) -> None:
        """Remove half-built checkpoints left by a kill (temporary siblings start with a dot)."""
        for child in self.path.glob(".*.tmp-*"):
            if child.is_dir():
                remove_tree(child)

    def rotate(self, keep_last: int | None) -> None:
        if keep_last is None:
            return
        for _, folder in self.checkpoints()[:-keep_last]:
            remove_tree(folder)


def remove_tree(path: Path) -> None:
    # Rename first, so a kill halfway through a delete never leaves a folder that looks complete.
    doomed = path.with_name(f".{path.name}.tmp-deleting-{os.getpid()}")
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


# ------------------------------------------------------------------------------------- damaged files


def checkpoint_problem(folder: Path, stage: str) -> str | None:
    """What makes `folder` unloadable, naming the file (None: complete and loadable). Reads only file headers:
    a missing or unparsable trainer state, no model weights, a truncated safetensors or torch file, and for the
    pretrain / distill loop a missing optimizer state."""
    state_file = folder / TRAINER_STATE_FILE
    if not state_file.is_file():
        return f"{state_file} is missing"
    try:
        json.loads(state_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        return f"{state_file} is not valid JSON ({error})"
    weights = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
    if not any((folder / name).is_file() for name in weights):
        return f"{folder} holds no model weights (model.safetensors)"
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, AttributeError) as error:
            return f"{index} is not a valid weight index ({error})"
        missing = [name for name in shards if not (folder / name).is_file()]
        if missing:
            return f"{folder / missing[0]} is missing"
    if stage in ("pretrain", "distill") and not (folder / OPTIMIZER_FILE).is_file():
        return f"{folder / OPTIMIZER_FILE} is missing"  # the Trainer's sft checkpoints name theirs differently
    for path in sorted(folder.iterdir()):
        problem = _damaged_file(path)
        if problem is not None:
            return problem
    return None


def _damaged_file(path: Path) -> str | None:
    if path.suffix == ".safetensors":
        return _damaged_safetensors(path)
    if path.suffix in (".pt", ".pth", ".bin"):  # torch.save writes a zip archive, its directory at the end
        try:
            with zipfile.ZipFile(path):
                return None
        except (zipfile.BadZipFile, OSError) as error:
            return f"{path} is damaged ({error})"
    return None


def _damaged_safetensors(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors the header places."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        header_length = int.from_bytes(head, "little") if len(head) == 8 else None
        if header_length is None or header_length > size - 8:
            return f"{path} is truncated ({size:,} bytes, not even its header)"
        try:
            header = json.loads(handle.read(header_length))
            data_end = max(
                (entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
            return f"{path} has a damaged header ({error})"
    expected = 8 + header_length + data_end
    if size != expected:
        return (
            f"{path} is truncated ({size:,} of {expected:,} bytes)"
            if size < expected
            else (f"{path} is damaged ({size:,} bytes, its header describes {expected:,})")
        )
    return None
