"""The built wheel works on its own: installed into a clean virtualenv (its dependencies borrowed from this
interpreter through a `.pth` file, so nothing is downloaded), run from outside the repository, it converts a
tiny Llama, evaluates it and writes its card, with the suites, task files and templates it ships."""

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import parent_tokenizer, tiny_config_kwargs
from transformers import LlamaConfig, LlamaForCausalLM


REPO = Path(__file__).resolve().parents[1]
PACKAGE_DATA = [
    "modeling_shishu/evaluation/data/suites/offline.yaml",
    "modeling_shishu/evaluation/data/tasks/offline/offline_shakespeare.yaml",
    "modeling_shishu/release/card_template.md",
    "modeling_shishu/demo/heal.yaml",
]
# build outputs and local state that a wheel is never built from
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "outputs", "*.egg-info", "__pycache__", ".*cache"
)


def build_wheel(tmp: Path) -> Path:
    """`pip wheel` of a copy of the repository (the build leaves its egg-info and build folders in the copy)."""
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source), "-w", tmp],
        check=True,
        cwd=tmp,
    )
    (wheel,) = tmp.glob("shishulm-*.whl")
    return wheel


def clean_venv(tmp: Path, wheel: Path) -> Path:
    """A virtualenv holding only the wheel; its dependencies come from this interpreter's site-packages."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    (purelib,) = json.loads(
        subprocess.check_output([python, "-c", "import json, site; print(json.dumps(site.getsitepackages()))"])
    )
    # Path lines only: the editable install's own .pth hook in those folders is not run, so the repository's
    # package stays invisible.
    Path(purelib, "borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)]
    subprocess.run(install, check=True)
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp)
    venv = clean_venv(tmp, wheel)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    work = tmp / "work"  # outside the repository
    work.mkdir()

    def run(*args, check=True):
        return subprocess.run(
            [str(a) for a in args], cwd=work, env=env, capture_output=True, text=True, check=check, timeout=300
        )

    return wheel, venv, work, run


def test_wheel_ships_the_package_data(installed):
    wheel = installed[0]
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in PACKAGE_DATA if name not in names] == []


def test_installed_wheel_runs_outside_the_repository(installed):
    _, venv, work, run = installed
    located = run(venv / "bin" / "python", "-c", "import modeling_shishu; print(modeling_shishu.__file__)")
    assert Path(located.stdout.strip()).is_relative_to(venv)  # the wheel's package, not the repository's
    shishu = venv / "bin" / "shishu"
    assert "--suite" in run(shishu, "eval", "--help").stdout

    tokenizer = parent_tokenizer()
    torch.manual_seed(0)
    kwargs = tiny_config_kwargs(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=True)
    kwargs.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(LlamaConfig(**kwargs)).save_pretrained(work / "tiny-parent")
    tokenizer.save_pretrained(work / "tiny-parent")

    convert = [shishu, "convert", "--parent", "tiny-parent", "--mlp-layers", "2", "--share", "pairs", "--no-fit"]
    run(*convert, "--out", "tiny-m2")
    assert json.loads((work / "tiny-m2" / "config.json").read_text())["model_type"] == "shishu"
    evaluate = [shishu, "eval", "--model", "tiny-m2", "--suite", "offline", "--tasks", "offline_shakespeare"]
    run(*evaluate, "--limit", "2", "--out", "eval")
    card = run(shishu, "card", "tiny-m2", "--results", "eval/results.json", "--license", "apache-2.0")
    assert "wrote" in card.stdout
    text = (work / "tiny-m2" / "README.md").read_text()
    assert "| 4+5 | MLP-only | one set per pair | none |" in text and "Shakespeare" in text
