"""Bad inputs and faults, as a hostile-but-fair user tries them: a checklist.

Each case ends in one clear line (exit code 2, no traceback) that names the file or argument and what is
wrong, or in a correct result, and leaves nothing half-written behind. One test (or parametrized case)
per input, on tiny models.

Cases that need a stage's own fixtures sit next to them, and belong to this list:
- recipe values of the wrong type (`per_device_train_batch_size: 2.5`, `true` for a number), unknown keys:
  test_recipes_config.py::test_bad_values_are_named, ::test_unknown_key_in_the_file_names_it
- an empty training corpus, a missing data file: test_recipes_pretrain.py::test_bad_inputs_are_reported_in_one_line
- an empty or missing SFT data file, conversations without an assistant turn:
  test_recipes_sft.py::test_bad_inputs_are_reported_in_one_line
- a missing or broken teacher folder, a teacher that is not Llama-family:
  test_recipes_distill.py::test_a_missing_or_broken_teacher_folder_is_named, ::test_a_non_llama_teacher_is_refused
- a config.json that disagrees with the weights, for the model class itself (every tool and remote-code user):
  test_modeling.py::test_a_config_that_disagrees_with_the_weights_is_refused
- a layout the Nemotron-NAS readers cannot represent (MLP-only layer 0, an MLP width off ffn_mult's grid, ...):
  test_export_nemotron_nas.py::test_unrepresentable_layouts_are_refused_in_one_line
"""

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port, save_parent, tiny_llama, tiny_texts

from modeling_shishu.cli import main as shishu_main
from modeling_shishu.conversion.convert import convert_checkpoint
from modeling_shishu.io_utils import atomic_directory


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


TINY_RECIPES = REPO_ROOT / "recipes" / "shishu-tiny"


def stage_main(stage: str):
    from modeling_shishu.training import distill, pretrain, sft

    return {"pretrain": pretrain.main, "distill": distill.main, "sft": sft.main}[stage]


def tiny_pretrain_argv(out: Path, *args) -> list[str]:
    """A pretraining run of the tiny recipe that takes seconds: 8 steps of 2 x 64 tokens, checkpoints every 3."""
    return [
        "--config",
        str(TINY_RECIPES / "pretrain" / "config.yaml"),
        "--max_length",
        "64",
        "--per_device_train_batch_size",
        "2",
        "--max_train_samples",
        "32",
        "--max_eval_samples",
        "2",
        "--max_steps",
        "8",
        "--save_steps",
        "3",
        "--eval_steps",
        "8",
        "--warmup_steps",
        "2",
        "--logging_steps",
        "1",
        "--progress_bar",
        "false",
        "--output_dir",
        str(out),
        *map(str, args),
    ]


def train_losses(run_dir: Path) -> dict[int, float]:
    from modeling_shishu.training.metrics import read_metrics

    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


# ----------------------------------------------------------------------------------------------------
# 1. Output folders are claimed: one writer at a time, a dead writer's claim and temporaries are taken over


def test_second_convert_into_the_same_out_is_refused_while_the_first_runs(parent, fit_text, tmp_path, capsys):
    out = tmp_path / "out"
    # A real conversion kept busy by a long fit: it claims --out before loading the parent.
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modeling_shishu.cli",
            "convert",
            "--parent",
            str(parent),
            "--mlp-layers",
            "2",
            "--fit-data",
            str(fit_text),
            "--fit-tokens",
            "256",
            "--fit-steps",
            "1000000",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (tmp_path / ".out.lock").is_file() or first.poll() is not None)
        assert first.poll() is None
        refused(
            capsys,
            ["convert", "--parent", parent, "--mlp-layers", "2", "--no-fit", "--out", out],
            f"{out} is being written by another process (pid {first.pid})",
        )
    finally:
        first.kill()
        first.wait()
    assert not out.exists()


def test_claim_of_a_killed_convert_is_taken_over(parent, tmp_path, capsys, hold):
    out = tmp_path / "out"
    holder = hold(out)
    refused(
        capsys, ["convert", "--parent", parent, "--mlp-layers", "2", "--no-fit", "--out", out], f"(pid {holder.pid})"
    )
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


@pytest.mark.parametrize("stage", ["pretrain", "distill", "sft"])
def test_second_training_run_into_a_held_run_folder_is_refused(stage, shishu, tmp_path, capsys, hold):
    # The holder stands for a live run, or for the rank-0 worker a killed `accelerate launch` left running.
    out = tmp_path / "run"
    holder = hold(out)
    argv = ["--config", TINY_RECIPES / stage / "config.yaml", "--output_dir", out, "--max_steps", "1"]
    if stage == "sft":
        argv += ["--model_name_or_path", shishu]
    capsys.readouterr()
    assert stage_main(stage)([str(arg) for arg in argv]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert errors == [
        f"{stage}: error: {out} is being written by another process (pid {holder.pid}); wait for it to finish"
    ]
    assert "Traceback" not in err and not out.exists()


def test_a_running_training_run_holds_its_folder_and_a_killed_one_is_taken_over(tmp_path, capsys):
    from modeling_shishu.training.pretrain import main as pretrain_main

    out = tmp_path / "run"
    first = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "recipes" / "scripts" / "pretrain.py"),
            *tiny_pretrain_argv(out, "--max_steps", "100000"),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (tmp_path / ".run.lock").is_file() or first.poll() is not None)
        assert first.poll() is None
        capsys.readouterr()
        assert pretrain_main(tiny_pretrain_argv(out, "--resume_from_checkpoint", "true")) == 2
        assert (
            f"pretrain: error: {out} is being written by another process (pid {first.pid})" in capsys.readouterr().err
        )
    finally:
        first.kill()
        first.wait()
    # The killed run's lock file is left behind; the next run takes it over.
    assert pretrain_main(tiny_pretrain_argv(out, "--max_steps", "2", "--overwrite_output_dir")) == 0
    assert (out / "final" / "config.json").is_file() and leftovers(tmp_path) == []


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
    config.update(
        model_type="evil-llama",
        auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(EVIL_CODE.format(marker=str(folder / "executed.txt")))
    return folder


REMOTE_CODE_COMMANDS = {
    "bench": lambda folder, shishu: ["bench", "--model", shishu, "--baseline", folder, "--quick"],
    "bench --random-init": lambda folder, shishu: [
        "bench",
        "--baseline",
        folder,
        "--random-init",
        "--mlp-layers",
        "4,5",
        "--quick",
    ],
    "eval": lambda folder, shishu: [
        "eval",
        "--model",
        folder,
        "--suite",
        "offline",
        "--tasks",
        "offline_shakespeare",
        "--out",
        folder.parent / "eval",
    ],
    "eval --baseline": lambda folder, shishu: [
        "eval",
        "--model",
        shishu,
        "--baseline",
        folder,
        "--suite",
        "offline",
        "--out",
        folder.parent / "eval",
    ],
    "analyze": lambda folder, shishu: ["analyze", "--model", folder, "--data", folder / "config.json"],
}


@pytest.mark.parametrize("command", REMOTE_CODE_COMMANDS)
def test_folder_code_does_not_run_without_trust_remote_code(command, evil, shishu, capsys):
    refused(
        capsys,
        REMOTE_CODE_COMMANDS[command](evil, shishu),
        f"{evil} needs its own Python code to load (evil.EvilConfig, evil.EvilForCausalLM); add --trust-remote-code",
    )
    assert not (evil / "executed.txt").exists()
    assert not (evil.parent / "eval").exists()


def analyze_argv(folder: Path, text: Path, out: Path) -> list[str]:
    """`shishu analyze` on a tiny model, in a second."""
    return [
        "analyze",
        "--model",
        str(folder),
        "--data",
        str(text),
        "--k",
        "2",
        "--context-length",
        "32",
        "--fit-tokens",
        "256",
        "--eval-tokens",
        "64",
        "--ablation-tokens",
        "64",
        "--out",
        str(out),
    ]


@pytest.mark.parametrize("stage", ["pretrain", "distill", "sft"])
def test_training_recipes_do_not_run_folder_code_without_consent(stage, evil, tmp_path, capsys):
    from modeling_shishu.training.distill import main as distill_main
    from modeling_shishu.training.pretrain import main as pretrain_main
    from modeling_shishu.training.sft import main as sft_main

    main, model_field = {
        "pretrain": (pretrain_main, "--config_name"),
        "distill": (distill_main, "--teacher_name_or_path"),
        "sft": (sft_main, "--model_name_or_path"),
    }[stage]
    recipe = REPO_ROOT / "recipes" / "shishu-tiny" / stage / "config.yaml"
    assert (
        main(
            [
                "--config",
                str(recipe),
                model_field,
                str(evil),
                "--output_dir",
                str(tmp_path / "run"),
                "--max_steps",
                "1",
            ]
        )
        == 2
    )
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        error.startswith(f"{stage}: error: {evil} needs its own Python code to load")
        and "--trust-remote-code" in error
    )
    assert not (evil / "executed.txt").exists() and not (tmp_path / "run").exists()


def test_folder_code_runs_with_trust_remote_code(evil, fit_text, tmp_path):
    with contextlib.suppress(Exception):  # what the evil model does once imported does not matter here
        shishu_main([*analyze_argv(evil, fit_text, tmp_path / "analysis"), "--trust-remote-code"])
    assert (evil / "executed.txt").read_text() == "executed"


@pytest.mark.parametrize("consent", [["--trust-remote-code"], ["--model-args", "trust_remote_code=True"]])
def test_eval_passes_the_consent_on_to_lm_eval(consent, evil, tmp_path, monkeypatch):
    seen = {}

    def evaluate_model(spec, suite, settings):
        seen["trust_remote_code"] = settings.trust_remote_code
        raise KeyboardInterrupt  # stop before lm-eval imports the folder's code

    monkeypatch.setattr("modeling_shishu.evaluation.harness.evaluate_model", evaluate_model)
    with pytest.raises(KeyboardInterrupt):
        shishu_main(
            [
                "eval",
                "--model",
                str(evil),
                "--suite",
                "offline",
                "--tasks",
                "offline_shakespeare",
                "--out",
                str(tmp_path / "eval"),
                *consent,
            ]
        )
    assert seen == {"trust_remote_code": True}
    assert leftovers(tmp_path) == [] and not (tmp_path / "eval").exists()


def test_push_does_not_run_foreign_folder_code(evil, capsys):
    refused(
        capsys,
        ["push", evil, "--repo-id", "shishu-test/evil", "--dry-run"],
        "auto_map names code that is not ShishuLM's (evil.EvilConfig, evil.EvilForCausalLM)",
    )
    assert not (evil / "executed.txt").exists()


def test_shishu_folder_loads_with_the_installed_code_not_its_own_copy(shishu, fit_text, tmp_path, capsys):
    folder = tmp_path / "shishu"
    shutil.copytree(shishu, folder)
    # The remote-code copy that save_pretrained put next to the weights: never imported without consent.
    (folder / "modeling_shishu.py").write_text(EVIL_CODE.format(marker=str(folder / "executed.txt")))
    assert shishu_main(analyze_argv(folder, fit_text, tmp_path / "analysis")) == 0
    assert (tmp_path / "analysis" / "layer_analysis.json").is_file()
    assert not (folder / "executed.txt").exists()


# ----------------------------------------------------------------------------------------------------
# 3. Unreadable checkpoints, unwritable outputs, malformed files and arguments: one line, nothing written


def truncate_weights(folder: Path) -> str:
    weights = folder / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    return f"{weights} is truncated"


def break_config(folder: Path) -> str:
    (folder / "config.json").write_text('{"model_type": "llama", ')
    return f"{folder / 'config.json'} is not valid JSON"


def remove_folder(folder: Path) -> str:
    shutil.rmtree(folder)
    return "no such checkpoint"


FAULTS = {
    "truncated model.safetensors": truncate_weights,
    "config.json not JSON": break_config,
    "missing folder": remove_folder,
}

# command -> (the tiny checkpoint it reads, its argv given the faulty copy, the output and the good ShishuLM)
READERS = {
    "convert": (
        "parent",
        lambda bad, out, good: ["convert", "--parent", bad, "--mlp-layers", "2", "--no-fit", "--out", out],
    ),
    "bench": ("parent", lambda bad, out, good: ["bench", "--model", good, "--baseline", bad, "--quick"]),
    "eval": (
        "shishu",
        lambda bad, out, good: [
            "eval",
            "--model",
            bad,
            "--suite",
            "offline",
            "--tasks",
            "offline_shakespeare",
            "--out",
            out,
        ],
    ),
    "analyze": (
        "parent",
        lambda bad, out, good: ["analyze", "--model", bad, "--data", out.parent / "fit.txt", "--k", "2", "--out", out],
    ),
    "export-llama": ("shishu", lambda bad, out, good: ["export-llama", bad, "--out", out]),
    "export-gguf": ("shishu", lambda bad, out, good: ["export-gguf", bad, "--out", out.with_suffix(".gguf")]),
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("command", READERS)
def test_unreadable_checkpoint_is_refused(command, fault, parent, shishu, fit_text, tmp_path, capsys):
    source, argv = READERS[command]
    folder = tmp_path / "checkpoint"
    shutil.copytree(parent if source == "parent" else shishu, folder)
    shutil.copy(fit_text, tmp_path / "fit.txt")
    expected = FAULTS[fault](folder)
    refused(capsys, argv(folder, tmp_path / "out", shishu), expected, str(folder))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.gguf").exists()


# A ShishuLM folder whose config.json no longer matches its weights (share groups removed by hand: the
# model class would otherwise fill the unshared layers with random weights)
LAYOUT_READERS = {
    "eval": READERS["eval"][1],
    "export-llama": READERS["export-llama"][1],
    "export-gguf": READERS["export-gguf"][1],
    "bench": lambda bad, out, good: ["bench", "--model", bad, "--baseline", good, "--quick"],
}


@pytest.mark.parametrize("command", LAYOUT_READERS)
def test_a_checkpoint_whose_config_disagrees_with_its_weights_is_refused(command, shishu, tmp_path, capsys):
    folder = tmp_path / "checkpoint"
    shutil.copytree(shishu, folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["mlp_share_groups"]
    config["mlp_share_groups"] = []
    (folder / "config.json").write_text(json.dumps(config))
    argv = LAYOUT_READERS[command](folder, tmp_path / "out", shishu)
    refused(capsys, argv, "do not match the layout in its config.json", "missing model.layers.")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.gguf").exists()


def test_distill_refuses_a_student_whose_config_disagrees_with_its_weights(parent, shishu, tmp_path, capsys):
    from modeling_shishu.training.distill import main as distill_main

    folder = tmp_path / "student"
    shutil.copytree(shishu, folder)
    config = json.loads((folder / "config.json").read_text())
    config["mlp_share_groups"] = []
    (folder / "config.json").write_text(json.dumps(config))
    argv = ["--config", REPO_ROOT / "recipes" / "shishu-tiny" / "distill" / "config.yaml"]
    argv += ["--teacher_name_or_path", parent, "--student_name_or_path", folder]
    argv += ["--output_dir", tmp_path / "run", "--max_steps", "1"]
    assert distill_main([str(arg) for arg in argv]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("distill: error: ") and "do not match the layout in its config.json" in error
    assert not (tmp_path / "run").exists()


def truncate_file(name: str):
    def damage(checkpoint: Path) -> str:
        os.truncate(checkpoint / name, (checkpoint / name).stat().st_size // 2)
        return f"{checkpoint / name} is truncated"

    return damage


def remove_trainer_state(checkpoint: Path) -> str:
    (checkpoint / "trainer_state.json").unlink()
    return f"{checkpoint / 'trainer_state.json'} is missing"


CHECKPOINT_DAMAGE = {
    "truncated model.safetensors": truncate_file("model.safetensors"),
    "truncated optimizer state": truncate_file("optimizer.safetensors"),
    "missing trainer state": remove_trainer_state,
}


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory) -> Path:
    from modeling_shishu.training.pretrain import main as pretrain_main

    out = tmp_path_factory.mktemp("resume") / "uninterrupted"
    assert pretrain_main(tiny_pretrain_argv(out)) == 0
    return out


@pytest.mark.parametrize("resume", [["--resume_from_checkpoint", "true"], []], ids=["resume true", "auto-resume"])
@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGE)
def test_resume_skips_a_damaged_last_checkpoint(damage, resume, uninterrupted_run, tmp_path, capsys, caplog):
    from modeling_shishu.training.pretrain import main as pretrain_main

    out = tmp_path / "run"
    assert pretrain_main(tiny_pretrain_argv(out, "--stop_after_steps", "7")) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    problem = CHECKPOINT_DAMAGE[damage](out / "checkpoint-6")
    if damage != "missing trainer state":  # (without its trainer state a folder is no checkpoint at all)
        capsys.readouterr()
        assert pretrain_main(tiny_pretrain_argv(out, "--resume_from_checkpoint", out / "checkpoint-6")) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
        assert len(errors) == 1 and problem in errors[0], errors

    caplog.clear()
    caplog.set_level(logging.INFO, logger="modeling_shishu")
    assert pretrain_main(tiny_pretrain_argv(out, *resume)) == 0
    skipped = [r.getMessage() for r in caplog.records if "damaged checkpoint" in r.getMessage()]
    assert len(skipped) == 1 and str(out / "checkpoint-6") in skipped[0] and problem in skipped[0], skipped
    assert any(f"resumed from {out / 'checkpoint-3'} at step 3" in r.getMessage() for r in caplog.records)
    # Steps 4 to 8 were trained again from checkpoint-3: the losses of the uninterrupted run.
    expected, resumed = train_losses(uninterrupted_run), train_losses(out)
    assert sorted(resumed) == list(range(1, 9))
    assert all(abs(resumed[step] - expected[step]) <= 1e-6 for step in expected), (resumed, expected)


@pytest.mark.multiprocess
def test_a_bad_input_under_accelerate_launch_keeps_its_one_line_error(tmp_path):
    # The workers print the line and exit with code 2; the launcher's closing ChildFailedError report, what the
    # user sees last, shows the same line as the root cause.
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((TINY_RECIPES / "pretrain" / "config.yaml").read_text() + "warmup_stpes: 3\n")
    accelerate = Path(sys.executable).with_name("accelerate")
    result = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--config_file",
            str(REPO_ROOT / "recipes" / "accelerate_configs" / "cpu_ddp.yaml"),
            "--main_process_port",
            str(free_port()),
            str(REPO_ROOT / "recipes" / "scripts" / "pretrain.py"),
            "--config",
            str(recipe),
            "--output_dir",
            str(tmp_path / "run"),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("pretrain: error: ")]
    assert errors and all("unknown key(s) in" in line and "warmup_stpes" in line for line in errors), result.stderr
    last = result.stderr.strip().splitlines()
    assert last[-1].startswith("=====") and last[-2].strip() == f"traceback : {errors[0]}", result.stderr[-3000:]
    assert not (tmp_path / "run").exists()


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can create files in, root included (root ignores permission bits: make it immutable)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    try:
        (folder / "probe").touch()
    except PermissionError:
        pass
    else:
        (folder / "probe").unlink()
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if not immutable:
            pytest.skip("cannot make a folder read-only for this user")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def must_not_run(*args, **kwargs):
    raise AssertionError("the long work started before the output location was checked")


# command -> (argv given the read-only folder, the ShishuLM and the results file; what must not run first)
WRITERS = {
    "convert": (
        lambda ro, good, results: [
            "convert",
            "--parent",
            good.parent / "parent",
            "--mlp-layers",
            "2",
            "--no-fit",
            "--out",
            ro / "out",
        ],
        ("modeling_shishu.conversion.convert", "load_parent"),
    ),
    "export-llama": (
        lambda ro, good, results: ["export-llama", good, "--out", ro / "out"],
        ("modeling_shishu.conversion.export_llama", "_export_llama"),
    ),
    "export-gguf": (
        lambda ro, good, results: ["export-gguf", good, "--out", ro / "out.gguf"],
        ("modeling_shishu.conversion.export_gguf", "load_for_export"),
    ),
    "eval": (
        lambda ro, good, results: [
            "eval",
            "--model",
            good,
            "--suite",
            "offline",
            "--tasks",
            "offline_shakespeare",
            "--out",
            ro / "out",
        ],
        ("modeling_shishu.evaluation.harness", "evaluate_model"),
    ),
    "card": (
        lambda ro, good, results: ["card", good, "--results", results, "--out", ro],
        ("modeling_shishu.release.card", "render_card"),
    ),
    "bench --json": (
        lambda ro, good, results: [
            "bench",
            "--model",
            good,
            "--baseline",
            good.parent / "parent",
            "--quick",
            "--json",
            ro / "bench.json",
        ],
        ("modeling_shishu.bench.cli", "run_benchmark"),
    ),
    "analyze --out": (
        lambda ro, good, results: ["analyze", "--model", good, "--out", ro / "analysis"],
        ("modeling_shishu.loading", "check_checkpoint_folder"),
    ),
}


@pytest.mark.parametrize("command", WRITERS)
def test_unwritable_output_is_refused_before_the_work_starts(
    command, shishu, read_only_dir, tmp_path, capsys, monkeypatch
):
    argv, (module, function) = WRITERS[command]
    monkeypatch.setattr(f"{module}.{function}", must_not_run)
    refused(capsys, argv(read_only_dir, shishu, tmp_path / "results.json"), "cannot write", str(read_only_dir))


def write_results(path: Path, **changes) -> Path:
    from modeling_shishu.evaluation import RESULTS_FORMAT, RESULTS_FORMAT_VERSION

    results = {
        "format": RESULTS_FORMAT,
        "format_version": RESULTS_FORMAT_VERSION,
        "suite": "offline",
        "date": "2026-01-01",
        "command": "shishu eval",
        "environment": {},
        "settings": {},
        "tasks": {"offline_shakespeare": {"metric": "acc"}},
        "models": [{"label": "tiny", "scores": {"offline_shakespeare": {"metric": "acc", "value": 0.5}}}],
    }
    path.write_text(json.dumps({**results, **changes}))
    return path


MALFORMED_RESULTS = {
    "tasks is a list": ({"tasks": ["offline_shakespeare"]}, '"tasks" must map each task name to its record'),
    "model without label": ({"models": [{"scores": {}}]}, 'models[0] has no "label"'),
    "model without scores": ({"models": [{"label": "tiny"}]}, "model 'tiny' has no \"scores\""),
}


@pytest.mark.parametrize("case", MALFORMED_RESULTS)
def test_card_refuses_a_malformed_results_file(case, shishu, tmp_path, capsys):
    changes, expected = MALFORMED_RESULTS[case]
    results = write_results(tmp_path / "results.json", **changes)
    refused(
        capsys, ["card", shishu, "--results", results, "--out", tmp_path / "card"], f"results file {results}", expected
    )
    assert not (tmp_path / "card").exists()


@pytest.mark.parametrize("case", MALFORMED_RESULTS)
def test_push_refuses_a_malformed_results_file(case, shishu, tmp_path, capsys):
    changes, expected = MALFORMED_RESULTS[case]
    folder = tmp_path / "shishu"
    shutil.copytree(shishu, folder)
    (folder / "README.md").write_text("# tiny\n")
    write_results(folder / "eval_results.json", **changes)
    refused(capsys, ["push", folder, "--repo-id", "shishu-test/tiny", "--dry-run"], "eval_results.json", expected)


@pytest.mark.parametrize("repo_id", ["bad repo id!!", "no-org", "org/name/extra"])
def test_card_refuses_an_invalid_repo_id(repo_id, shishu, tmp_path, capsys):
    results = write_results(tmp_path / "results.json")
    refused(
        capsys,
        ["card", shishu, "--results", results, "--repo-id", repo_id, "--out", tmp_path / "card"],
        f"--repo-id {repo_id!r}",
    )
    assert not (tmp_path / "card").exists()


def test_explicit_layers_that_form_no_pair_are_refused(parent, tmp_path, capsys):
    out = tmp_path / "out"
    refused(
        capsys,
        ["convert", "--parent", parent, "--layers", "1,3", "--share", "pairs", "--no-fit", "--out", out],
        "layers [1, 3] are not adjacent, so share 'pairs' forms no pair",
        "--share none",
    )
    assert leftovers(tmp_path) == [] and not out.exists()
    assert (
        shishu_main(
            ["convert", "--parent", str(parent), "--layers", "1,3", "--share", "none", "--no-fit", "--out", str(out)]
        )
        == 0
    )


def test_unpaired_layer_is_named_in_a_warning(parent, tmp_path, capsys):
    assert (
        shishu_main(
            ["convert", "--parent", str(parent), "--layers", "1,2,4", "--no-fit", "--out", str(tmp_path / "out")]
        )
        == 0
    )
    assert "MLP-only layer(s) [4] have no adjacent MLP-only partner" in capsys.readouterr().err


def test_unknown_layer_type_name_is_refused(shishu, tmp_path, capsys):
    folder = tmp_path / "shishu"
    shutil.copytree(shishu, folder)
    config = json.loads((folder / "config.json").read_text())
    config["block_types"][0] = "attention"  # transformers' legacy alias of "full_attention": not a ShishuLM name
    (folder / "config.json").write_text(json.dumps(config))
    refused(
        capsys,
        ["export-llama", folder, "--out", tmp_path / "out"],
        f"{folder / 'config.json'}: layer_types[0] is 'attention'; allowed values are ['full_attention', 'mlp']",
    )
    from modeling_shishu import ShishuConfig

    with pytest.raises(ValueError, match="layer_types\\[0\\] is 'attention'"):
        ShishuConfig.from_pretrained(folder)
