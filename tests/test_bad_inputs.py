"""Bad inputs and faults, as a hostile-but-fair user tries them: a checklist.

Each case ends in one clear line (exit code 2, no traceback) that names the file or argument and what is
wrong, or in a correct result, and leaves nothing half-written behind. One test (or parametrized case)
per input, on tiny models.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modeling_shishu.cli import main as shishu_main
from modeling_shishu.conversion import convert_checkpoint
from modeling_shishu.io_utils import atomic_directory
from test_conversion import save_parent, tiny_llama, tiny_texts


pytestmark = pytest.mark.usefixtures("one_thread")

REPO_ROOT = Path(__file__).resolve().parent.parent
IO_UTILS = REPO_ROOT / "modeling_shishu" / "io_utils.py"

# Claims the outputs named on its command line as a writer would (lock, then a temporary build folder),
# says "ready" and waits to be killed. It loads io_utils alone, so it starts in a fraction of a second.
HOLDER = """
import contextlib, importlib.util, sys, time
spec = importlib.util.spec_from_file_location("io_utils", sys.argv[1])
io_utils = importlib.util.module_from_spec(spec)
spec.loader.exec_module(io_utils)
with contextlib.ExitStack() as stack:
    for path in sys.argv[2:]:
        stack.enter_context(io_utils.claim_output(path, overwrite=True))
        stack.enter_context(io_utils.atomic_directory(path, overwrite=True))
    print("ready", flush=True)
    time.sleep(600)
"""


# ----------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    return save_parent(tiny_llama(), tmp_path_factory.mktemp("bad") / "parent")


@pytest.fixture(scope="module")
def shishu(parent) -> Path:
    return convert_checkpoint(parent, parent.parent / "shishu", num_mlp_layers=2)


@pytest.fixture(scope="module")
def fit_text(parent) -> Path:
    path = parent.parent / "fit.txt"
    path.write_text("\n".join(tiny_texts()))
    return path


@pytest.fixture
def hold():
    """`hold(*paths)`: another process claims the outputs and starts writing them; returns that process."""
    processes = []

    def start(*paths):
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(IO_UTILS), *map(str, paths)], stdout=subprocess.PIPE, text=True
        )
        processes.append(process)
        assert process.stdout.readline().strip() == "ready"
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()


def refused(capsys, argv, *fragments) -> str:
    """Run `shishu ARGV`; assert it ends with exit code 2 and one error line holding every fragment."""
    capsys.readouterr()
    assert shishu_main([str(arg) for arg in argv]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if ".tmp-" in path.name or path.name.endswith(".lock"))


# ----------------------------------------------------------------------------------------------------
# 1. Output folders are claimed: one writer at a time, a dead writer's claim and temporaries are taken over


def test_second_convert_into_the_same_out_is_refused_while_the_first_runs(parent, fit_text, tmp_path, capsys):
    out = tmp_path / "out"
    # A real conversion kept busy by a long fit: it claims --out before loading the parent.
    first = subprocess.Popen(
        [sys.executable, "-m", "modeling_shishu.cli", "convert", "--parent", str(parent), "--mlp-layers", "2",
         "--fit-data", str(fit_text), "--fit-tokens", "256", "--fit-steps", "1000000", "--out", str(out)],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: (tmp_path / ".out.lock").is_file() or first.poll() is not None)
        assert first.poll() is None
        refused(capsys, ["convert", "--parent", parent, "--mlp-layers", "2", "--no-fit", "--out", out],
                f"{out} is being written by another process (pid {first.pid})")  # fmt: skip
    finally:
        first.kill()
        first.wait()
    assert not out.exists()


def test_claim_of_a_killed_convert_is_taken_over(parent, tmp_path, capsys, hold):
    out = tmp_path / "out"
    holder = hold(out)
    refused(capsys, ["convert", "--parent", parent, "--mlp-layers", "2", "--no-fit", "--out", out], f"(pid {holder.pid})")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / ".out.lock").read_text().strip() == str(holder.pid)  # the dead writer's claim is still there
    assert shishu_main(["convert", "--parent", str(parent), "--mlp-layers", "2", "--no-fit", "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file()


def test_temporary_folder_of_a_killed_convert_is_removed_by_the_next_run(parent, tmp_path, hold):
    out = tmp_path / "out"
    holder = hold(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert any(name.startswith(".out.tmp-") for name in leftovers(tmp_path))
    assert shishu_main(["convert", "--parent", str(parent), "--mlp-layers", "2", "--no-fit", "--out", str(out)]) == 0
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["export-llama", "export-gguf", "eval", "card"])
def test_other_writers_of_a_claimed_output_are_refused(command, shishu, tmp_path, capsys, hold):
    out = tmp_path / ("out.gguf" if command == "export-gguf" else "out")
    argv = {
        "export-llama": ["export-llama", shishu, "--out", out],
        "export-gguf": ["export-gguf", shishu, "--out", out],
        "eval": ["eval", "--model", shishu, "--suite", "offline", "--tasks", "offline_shakespeare", "--out", out],
        "card": ["card", shishu, "--results", tmp_path / "results.json", "--out", out],
    }[command]
    holder = hold(out)
    refused(capsys, argv, f"{out} is being written by another process (pid {holder.pid})")


def test_atomic_directory_keeps_a_folder_that_appeared_while_writing(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(FileExistsError, match="appeared while it was being written"):
        with atomic_directory(final) as tmp:
            (tmp / "mine.txt").write_text("mine")
            final.mkdir()
            (final / "theirs.txt").write_text("theirs")
    assert [path.name for path in final.iterdir()] == ["theirs.txt"]
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------------------------------
# 2. Code from a checkpoint folder runs only with --trust-remote-code


EVIL_CODE = """
from pathlib import Path
from transformers import LlamaConfig, LlamaForCausalLM

Path({marker!r}).write_text("executed")  # transformers runs a copy of this file from its module cache


class EvilConfig(LlamaConfig):
    model_type = "evil-llama"


class EvilForCausalLM(LlamaForCausalLM):
    config_class = EvilConfig
"""


@pytest.fixture
def evil(parent, tmp_path) -> Path:
    """A Llama folder whose config sends transformers to its own evil.py, which leaves a marker when imported."""
    folder = tmp_path / "evil"
    folder.mkdir()
    for item in parent.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil-llama", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(EVIL_CODE.format(marker=str(folder / "executed.txt")))
    return folder


REMOTE_CODE_COMMANDS = {
    "bench": lambda folder, shishu: ["bench", "--model", shishu, "--baseline", folder, "--quick"],
    "bench --random-init": lambda folder, shishu: ["bench", "--baseline", folder, "--random-init", "--mlp-layers", "4,5", "--quick"],
    "eval": lambda folder, shishu: ["eval", "--model", folder, "--suite", "offline", "--tasks", "offline_shakespeare", "--out", folder.parent / "eval"],
    "eval --baseline": lambda folder, shishu: ["eval", "--model", shishu, "--baseline", folder, "--suite", "offline", "--out", folder.parent / "eval"],
    "analyze": lambda folder, shishu: ["analyze", "--model", folder, "--data", folder / "config.json"],
}


@pytest.mark.parametrize("command", REMOTE_CODE_COMMANDS)
def test_folder_code_does_not_run_without_trust_remote_code(command, evil, shishu, capsys):
    refused(capsys, REMOTE_CODE_COMMANDS[command](evil, shishu), f"{evil} needs its own Python code to load (evil.EvilConfig, evil.EvilForCausalLM); add --trust-remote-code")
    assert not (evil / "executed.txt").exists()
    assert not (evil.parent / "eval").exists()


def analyze_argv(folder: Path, text: Path, out: Path) -> list[str]:
    """`shishu analyze` on a tiny model, in a second."""
    return ["analyze", "--model", str(folder), "--data", str(text), "--k", "2", "--context-length", "32", "--fit-tokens", "256",
            "--eval-tokens", "64", "--ablation-tokens", "64", "--out", str(out)]  # fmt: skip


def test_folder_code_runs_with_trust_remote_code(evil, fit_text, tmp_path):
    with contextlib.suppress(Exception):  # what the evil model does once imported does not matter here
        shishu_main([*analyze_argv(evil, fit_text, tmp_path / "analysis"), "--trust-remote-code"])
    assert (evil / "executed.txt").read_text() == "executed"


def test_shishu_folder_loads_with_the_installed_code_not_its_own_copy(shishu, fit_text, tmp_path, capsys):
    folder = tmp_path / "shishu"
    shutil.copytree(shishu, folder)
    # The remote-code copy that save_pretrained put next to the weights: never imported without consent.
    (folder / "modeling_shishu.py").write_text(EVIL_CODE.format(marker=str(folder / "executed.txt")))
    assert shishu_main(analyze_argv(folder, fit_text, tmp_path / "analysis")) == 0
    assert (tmp_path / "analysis" / "layer_analysis.json").is_file()
    assert not (folder / "executed.txt").exists()
