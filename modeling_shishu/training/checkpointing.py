"""Checkpoints: saving and restoring model, optimizer and RNG state, with safetensors and JSON only (no pickles).

A checkpoint is built in a temporary sibling folder and renamed into place when every rank has written its part,
so a kill at any moment leaves only complete checkpoints (and a stale temporary folder that the next start
removes). Model and optimizer states go through `torch.distributed.checkpoint.state_dict` with full state
dicts, so the same code saves a single process, DDP and FSDP runs.
"""

import contextlib
import hashlib
import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..io_utils import atomic_directory, atomic_write_json
from .run_directory import OPTIMIZER_FILE, TRAINER_STATE_FILE


logger = logging.getLogger(__name__)


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
