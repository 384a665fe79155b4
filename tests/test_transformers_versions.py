"""The remote-code pair on every supported transformers release, each installed into its own folder.

A checkpoint on the Hub is loaded with the transformers its user has, so the saved files are checked under each
release in a fresh process (`remote_code_checks.py`), while this environment keeps its pinned version. By default
the oldest supported, the pinned and the newest release run; all of them with

    SHISHU_TRANSFORMERS_VERSIONS=all .venv/bin/python -m pytest tests/test_transformers_versions.py

(or `make test-transformers`), which also tries the newest release the package registry offers. A comma-separated
list picks others. Installs are cached under `$SHISHU_CACHE/transformers/`.
"""

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import transformers
from conftest import tiny_config_kwargs, tiny_tokenizer
from filelock import FileLock
from transformers import LlamaConfig, LlamaForCausalLM

from modeling_shishu import ShishuConfig, ShishuForCausalLM
from modeling_shishu.assets import cache_dir


# The newest patch release of every minor version the remote code supports. 5.10 is the floor: it is the first
# release with a key/value-free cache layer for the MLP-only blocks (before it, a cache reads the sequence length
# from layer 0 even when that layer has no attention).
SUPPORTED_RELEASES = [
    "5.10.4",
    "5.11.0",
    "5.12.1",
    "5.13.1",
    "5.14.1",
    "5.15.1",
    "5.16.1",
    "5.17.0",
    "5.18.0",
    "5.19.0",
    "5.20.2",
    "5.21.1",
    "5.22.2",
    "5.23.0",
    "5.24.0",
    "5.25.0",
]
REPO = Path(__file__).resolve().parent.parent


def releases_to_test() -> list[str]:
    choice = os.environ.get("SHISHU_TRANSFORMERS_VERSIONS", "").strip()
    if choice == "all":
        # plus the newest release on the registry, so a new release shows up here as a row before users meet it
        newest = newest_registry_release()
        return SUPPORTED_RELEASES + ([newest] if newest and newest not in SUPPORTED_RELEASES else [])
    if choice:
        return [version.strip() for version in choice.split(",") if version.strip()]
    return sorted({SUPPORTED_RELEASES[0], transformers.__version__, SUPPORTED_RELEASES[-1]}, key=_version_key)


def newest_registry_release() -> str | None:
    """The newest transformers release the package registry offers (pre-releases excluded), None if unreachable."""
    command = [sys.executable, "-m", "pip", "index", "versions", "transformers"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None
    match = re.search(r"^transformers \(([^)]+)\)", result.stdout, re.MULTILINE)
    return match.group(1) if result.returncode == 0 and match else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def install_release(version: str) -> Path:
    """`pip install --target` one transformers release with its own dependencies (torch comes from here)."""
    folder = cache_dir() / "transformers" / version
    if (folder / ".complete").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / ".complete").is_file():
            return folder
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=folder.parent))
        try:
            command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", str(staging)]
            result = subprocess.run(
                [*command, f"transformers=={version}"], capture_output=True, text=True, timeout=900
            )
            assert result.returncode == 0, f"pip could not install transformers=={version}:\n{result.stderr[-3000:]}"
            (staging / ".complete").touch()
            shutil.rmtree(folder, ignore_errors=True)
            os.rename(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> Path:
    """The checkpoints a user downloads, written by this (pinned) release, plus the reference logits."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    hybrid = ShishuForCausalLM(
        ShishuConfig(
            **tiny_config_kwargs(
                num_hidden_layers=6,
                # an MLP-only block at the bottom: caches must not take layer 0 as an attention layer
                layer_types=["mlp", "full_attention", "mlp", "mlp", "full_attention", "full_attention"],
                mlp_share_groups=[[2, 3]],
                initializer_range=0.2,
            )
        )
    ).eval()
    hybrid.save_pretrained(folder / "hybrid")
    tiny_tokenizer().save_pretrained(folder / "hybrid")
    input_ids = torch.randint(3, 99, (2, 14))
    with torch.no_grad():
        logits = hybrid(input_ids).logits
    reference = {"input_ids": input_ids.tolist(), "logits": logits.tolist()}
    (folder / "reference.json").write_text(json.dumps(reference))

    kwargs = tiny_config_kwargs(initializer_range=0.2, tie_word_embeddings=False)
    llama = LlamaForCausalLM(LlamaConfig(**kwargs)).eval()
    llama.save_pretrained(folder / "llama")
    shishu = ShishuForCausalLM(ShishuConfig(**kwargs)).eval()
    shishu.load_state_dict(llama.state_dict())
    shishu.save_pretrained(folder / "all_attention")
    return folder


def run_checks(release_folder: Path, saved_models: Path, workdir: Path) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(release_folder),
        "HF_MODULES_CACHE": str(workdir / "modules"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONWARNINGS": "ignore",
    }
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "remote_code_checks.py"), str(saved_models)],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("version", releases_to_test())
def test_remote_code_under_release(version, saved_models, tmp_path):
    report = run_checks(install_release(version), saved_models, tmp_path)
    assert report["transformers"] == version
    hybrid = report["hybrid"]
    assert hybrid["module"].startswith("transformers_modules"), hybrid["module"]
    assert hybrid["logits_vs_saving_release"] <= 1e-4
    assert hybrid["last_token_alone_vs_in_context"] > 0.5, "attention barely changes the logits: a weak check"
    assert hybrid["incremental_vs_full"] <= 1e-4
    tokens = hybrid["greedy_tokens"]
    assert tokens["dynamic_cache"] == tokens["no_cache"]
    assert tokens["static_cache"] == tokens["no_cache"]
    assert hybrid["left_padded_batch"] == hybrid["single_prompts"]
    assert hybrid["compiled_static_cache"] == hybrid["eager_static_cache"]
    assert hybrid["compiled_graphs"] == 1
    assert report["all_attention"]["logits_vs_llama"] <= 1e-5
    assert "do not match the layout in its config.json" in report["layout_mismatch_error"]
    assert report["tokenizer_without_remote_code"] == {"class": "TokenizersBackend", "same_ids_as_trusted": True}
    assert report["conventions"] == {
        "return_dict_false": "tuple",
        "config_return_dict_false": "tuple",
        "init_without_weights": "ShishuForCausalLM",
    }


def test_declared_transformers_range_is_the_tested_one():
    """setup.cfg's floor is the oldest release this module checks; there is no cap (docs/compatibility.md): newer
    releases are tried by `make test-transformers` as they appear."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    requirements = parser["options"]["install_requires"]
    declared = re.search(r"^\s*transformers(.*)$", requirements, re.MULTILINE).group(1).strip()
    oldest, newest = SUPPORTED_RELEASES[0], SUPPORTED_RELEASES[-1]
    assert declared == f">={oldest}", declared
    assert _version_key(oldest) <= _version_key(transformers.__version__) <= _version_key(newest)


def test_the_card_names_the_newest_release_of_the_matrix():
    from modeling_shishu.release.card import NEWEST_TESTED_TRANSFORMERS

    assert NEWEST_TESTED_TRANSFORMERS == SUPPORTED_RELEASES[-1]
