"""Run folders, atomic checkpoints and exact resume, with safetensors and JSON only (no pickles).

A run folder (`output_dir`) holds:

    run.json                  stage + fingerprint of the settings that define the run
    checkpoint-<step>/        Hub-loadable model (config, remote code, tokenizer, model.safetensors)
                              + optimizer.safetensors, rng_state_<rank>.safetensors, trainer_state.json
    metrics.jsonl, loss_curve.png
    final/                    the Hub-ready result (use_cache on, generation config = tokenizer's eos)
    training_summary.json

A checkpoint is built in a temporary sibling folder and renamed into place when every rank has written
its part, so a kill at any moment leaves only complete checkpoints (and a stale temporary folder that
the next start removes). Model and optimizer states go through `torch.distributed.checkpoint.state_dict`
with full state dicts, so the same code saves a single process, DDP and FSDP runs.
"""

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..io_utils import atomic_directory, atomic_write_json


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
            _remove_tree(self.path)
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
                _remove_tree(child)

    def rotate(self, keep_last: int | None) -> None:
        if keep_last is None:
            return
        for _, folder in self.checkpoints()[:-keep_last]:
            _remove_tree(folder)


def _remove_tree(path: Path) -> None:
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


# --------------------------------------------------------------------------------------- state dicts


def _state_dict_options(cpu_offload: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


def full_model_state_dict(model) -> dict:
    """The whole model's state dict on CPU (a collective under FSDP: every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_state_dict_options())


def _unwrap_optimizer(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer


def full_optimizer_state_dict(model, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, _unwrap_optimizer(optimizer), options=_state_dict_options())


def save_optimizer_state(state: dict, path: Path) -> None:
    """A full optimizer state dict (keyed by parameter names) as safetensors.

    Tensors are stored as `<parameter name>::<state key>`; scalar state and the parameter groups (learning
    rate, betas, ...) go to the JSON metadata. Nothing is pickled.
    """
    tensors, scalars = {}, {}
    for name, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}::{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{name}::{key}"] = value
    metadata = {"scalars": json.dumps(scalars), "param_groups": json.dumps(state["param_groups"])}
    save_file(tensors, str(path), metadata=metadata)


def load_optimizer_state(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    state: dict[str, dict] = {}
    for flat_key, value in [*load_file(str(path)).items(), *json.loads(metadata["scalars"]).items()]:
        name, key = flat_key.rsplit("::", 1)
        state.setdefault(name, {})[key] = value
    param_groups = json.loads(metadata["param_groups"])
    for group in param_groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])  # JSON turned the tuple into a list
    return {"state": state, "param_groups": param_groups}


def load_model_weights(folder: Path) -> dict:
    """Read `model.safetensors` (or a sharded set) from a checkpoint folder."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        state = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_file(str(folder / shard)))
        return state
    return load_file(str(folder / "model.safetensors"))


def restore_model_and_optimizer(folder: Path, model, optimizer, config) -> None:
    """Load a checkpoint's weights and optimizer state into the (possibly wrapped) model and optimizer."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    weights = load_model_weights(folder)
    if config.tie_word_embeddings and "lm_head.weight" not in weights:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]  # save_pretrained stores tied weights once
    set_model_state_dict(model, weights, options=_state_dict_options())
    set_optimizer_state_dict(
        model,
        _unwrap_optimizer(optimizer),
        load_optimizer_state(folder / OPTIMIZER_FILE),
        options=_state_dict_options(),
    )


# ------------------------------------------------------------------------------------------ RNG state


def save_rng_state(folder: Path, rank: int) -> None:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = state
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, python_state, gauss = random.getstate()
    metadata = {
        "python": json.dumps([version, list(python_state), gauss]),
        "numpy": json.dumps([kind, int(position), int(has_gauss), float(cached_gaussian)]),
    }
    save_file(tensors, str(folder / f"rng_state_{rank}.safetensors"), metadata=metadata)


def load_rng_state(folder: Path, rank: int) -> None:
    path = folder / f"rng_state_{rank}.safetensors"
    if not path.is_file():
        logger.warning("%s has no RNG state for rank %d (resumed with a different world size?)", folder, rank)
        return
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if states:
            torch.cuda.set_rng_state_all(states)
    kind, position, has_gauss, cached_gaussian = json.loads(metadata["numpy"])
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    version, python_state, gauss = json.loads(metadata["python"])
    random.setstate((version, tuple(python_state), gauss))


# ----------------------------------------------------------------------------------------- folders


def prepare_for_hub(model, tokenizer) -> None:
    """Inference settings of a released folder: KV cache on, generation stops at the tokenizer's eos."""
    model.config.use_cache = True
    generation_config = model.generation_config
    generation_config.eos_token_id = tokenizer.eos_token_id
    if tokenizer.bos_token_id is not None:
        generation_config.bos_token_id = tokenizer.bos_token_id
    generation_config.pad_token_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )


def write_model_folder(folder: Path, model, state_dict: dict, tokenizer) -> None:
    """`save_pretrained` (config, remote-code files, safetensors, generation config) plus the tokenizer."""
    prepare_for_hub(model, tokenizer)
    model.save_pretrained(folder, state_dict=state_dict)
    tokenizer.save_pretrained(folder)


def apply_default_permissions(folder: Path) -> None:
    """Give a staged folder the permissions a plain `mkdir` / `open` would have (temporary folders and
    files are created private), so released checkpoints are readable by the user's group as usual."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def save_checkpoint(accelerator, folder: Path, model, optimizer, tokenizer, trainer_state: dict) -> None:
    """Write `folder` atomically: every rank writes its RNG state, the main process the rest.

    `trainer_state.json` is written last and the folder is renamed into place only after all ranks are
    done, so an existing `checkpoint-<step>` is always complete.
    """
    from accelerate.utils import broadcast_object_list

    model_state = full_model_state_dict(model)
    optimizer_state = full_optimizer_state_dict(model, optimizer)
    staging = atomic_directory(folder, overwrite=True) if accelerator.is_main_process else contextlib.nullcontext()
    with staging as tmp:
        shared = [str(tmp) if accelerator.is_main_process else None]
        if accelerator.num_processes > 1:
            broadcast_object_list(shared, from_process=0)
        tmp = Path(shared[0])
        save_rng_state(tmp, accelerator.process_index)
        if accelerator.is_main_process:
            write_model_folder(tmp, accelerator.unwrap_model(model), model_state, tokenizer)
            save_optimizer_state(optimizer_state, tmp / OPTIMIZER_FILE)
            atomic_write_json(tmp / TRAINER_STATE_FILE, trainer_state)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            apply_default_permissions(tmp)
    accelerator.wait_for_everyone()


def save_final_model(accelerator, folder: Path, model, tokenizer, extra_files: dict | None = None) -> None:
    """The Hub-ready result: model, remote code, tokenizer, generation config (plus small JSON files)."""
    model_state = full_model_state_dict(model)
    if accelerator.is_main_process:
        with atomic_directory(folder, overwrite=True) as tmp:
            write_model_folder(tmp, accelerator.unwrap_model(model), model_state, tokenizer)
            for name, data in (extra_files or {}).items():
                atomic_write_json(tmp / name, data)
            apply_default_permissions(tmp)
    accelerator.wait_for_everyone()


def parameter_digest(model) -> str:
    """SHA-256 over every parameter's name, dtype, shape and bytes: equal digests = identical weights."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        tensor = parameter.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
