"""Pretraining recipe: loss falls, the final folder is Hub-ready, resume is exact (after a stop and after
SIGKILL, on its own or from a given checkpoint), and bad input fails with a clear message. A tiny ShishuLM (4 layers, d=64) with the real
SmolLM2 tokenizer on a slice of the offline Shakespeare corpus."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modeling_shishu.training.arguments import (
    DataArguments,
    ModelArguments,
    TrainArguments,
    fingerprint_fields,
    parse_recipe_args,
)
from modeling_shishu.training.checkpointing import load_model_weights
from modeling_shishu.training.metrics import read_metrics
from modeling_shishu.training.pretrain import main as pretrain_main
from modeling_shishu.training.run_directory import RunDirectory


REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "shishu-tiny" / "pretrain" / "config.yaml"
TINY_MODEL = "hidden_size=64,intermediate_size=192,num_hidden_layers=4,num_attention_heads=4,num_key_value_heads=2"
SMALL = [
    "--config",
    str(RECIPE),
    "--max_length",
    "64",
    "--per_device_train_batch_size",
    "2",
    "--max_train_samples",
    "64",
    "--max_eval_samples",
    "4",
    "--progress_bar",
    "false",
    "--logging_steps",
    "1",
]
# The run that resume tests compare against: 12 steps, checkpoints every 3.
RESUME_RUN = [*SMALL, "--max_steps", "12", "--save_steps", "3", "--eval_steps", "6", "--warmup_steps", "2"]


def pretrain(out, *args) -> int:
    return pretrain_main([*args, "--output_dir", str(out)])


def train_losses(run_dir):
    return [(r["step"], r["loss"], r["lr"]) for r in read_metrics(Path(run_dir) / "metrics.jsonl") if "loss" in r]


def eval_losses(run_dir):
    return [(r["step"], r["eval_loss"]) for r in read_metrics(Path(run_dir) / "metrics.jsonl") if "eval_loss" in r]


def assert_same_run(a, b):
    """Same logged losses (to 1e-6) and bit-identical final weights."""
    losses_a, losses_b = train_losses(a), train_losses(b)
    assert [s for s, _, _ in losses_a] == [s for s, _, _ in losses_b] == list(range(1, 13))
    for (step, loss_a, lr_a), (_, loss_b, lr_b) in zip(losses_a, losses_b):
        assert abs(loss_a - loss_b) <= 1e-6, f"step {step}: {loss_a} vs {loss_b}"
        assert lr_a == lr_b
    evals_a, evals_b = eval_losses(a), eval_losses(b)
    assert [s for s, _ in evals_a] == [s for s, _ in evals_b] == [6, 12]
    assert [v for _, v in evals_a] == pytest.approx([v for _, v in evals_b], abs=1e-6)
    weights_a, weights_b = load_model_weights(Path(a) / "final"), load_model_weights(Path(b) / "final")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "reference"
    assert pretrain(out, *RESUME_RUN) == 0
    return out


def test_loss_falls_and_the_final_folder_is_hub_ready(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    assert (
        pretrain(
            out,
            *SMALL,
            "--max_steps",
            "16",
            "--warmup_steps",
            "4",
            "--save_steps",
            "8",
            "--eval_steps",
            "8",
            "--eval_on_start",
        )
        == 0
    )
    losses = [loss for _, loss, _ in train_losses(out)]
    evals = [loss for _, loss in eval_losses(out)]
    assert len(losses) == 16 and len(evals) == 3
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    assert evals[-1] < evals[0] - 0.3, evals
    records = read_metrics(out / "metrics.jsonl")
    assert all(r["tokens_per_second"] > 0 for r in records if "loss" in r)
    seconds = [r["train_seconds"] for r in records if "loss" in r]  # training time so far, the x of a curve
    assert seconds == sorted(seconds) and seconds[0] > 0
    assert "mfu" not in records[-2]  # no GPU here: MFU is only reported against a known peak
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in out.iterdir() if p.name.startswith("checkpoint-")] == ["checkpoint-8"]

    final = out / "final"
    for name in (
        "config.json",
        "model.safetensors",
        "configuration_shishu.py",
        "modeling_shishu.py",
        "tokenizer.json",
        "generation_config.json",
    ):
        assert (final / name).is_file(), name
    tokenizer = AutoTokenizer.from_pretrained(final, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(final, trust_remote_code=True)
    config = json.loads((final / "config.json").read_text())
    assert config["model_type"] == "shishu" and "AutoModelForCausalLM" in config["auto_map"]
    assert config["block_types"] == ["full_attention", "full_attention", "mlp", "mlp"]
    assert config["mlp_share_groups"] == [[2, 3]]
    assert model.config.use_cache is True
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id
    prompt = tokenizer("To be, or not to be", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == prompt.input_ids.shape[1] + 4
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["world_size"] == 1 and summary["steps"] == 16
    assert summary["final_loss"] == losses[-1]


def test_resume_after_a_stop_equals_the_uninterrupted_run(reference_run, tmp_path, caplog):
    out = tmp_path / "stopped"
    assert pretrain(out, *RESUME_RUN, "--stop_after_steps", "5") == 0
    assert not (out / "final").exists()
    assert [s for s, _ in RunDirectory(out, "pretrain", {}).checkpoints()] == [3]
    assert max(s for s, _, _ in train_losses(out)) == 5  # steps 4 and 5 were logged, then lost
    # The same command again continues from the last checkpoint, as the handbook scripts do.
    assert pretrain(out, *RESUME_RUN) == 0
    assert_same_run(reference_run, out)
    # Starting a finished run again does nothing; the old `--resume` flag still parses, with a warning.
    summary = (out / "training_summary.json").read_bytes()
    caplog.clear()
    assert pretrain(out, *RESUME_RUN, "--resume") == 0
    assert (out / "training_summary.json").read_bytes() == summary
    warnings = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert warnings == [
        "resume is deprecated and will be removed in the next release: use resume_from_checkpoint "
        "(a run continues from its last checkpoint on its own)"
    ]


def test_resume_from_a_given_checkpoint_equals_the_uninterrupted_run(reference_run, tmp_path, capsys):
    out = tmp_path / "stopped"
    assert pretrain(out, *RESUME_RUN, "--stop_after_steps", "7") == 0
    assert [s for s, _ in RunDirectory(out, "pretrain", {}).checkpoints()] == [3, 6]
    # Not the last checkpoint: steps 4 to 7 are recomputed, and logged as the uninterrupted run logged them.
    assert pretrain(out, *RESUME_RUN, "--resume_from_checkpoint", str(out / "checkpoint-3")) == 0
    assert_same_run(reference_run, out)

    # A checkpoint of another recipe, a folder that is no checkpoint, and `true` without a checkpoint are refused.
    other = tmp_path / "other"
    assert (
        pretrain(other, *RESUME_RUN, "--learning_rate", "0.01", "--resume_from_checkpoint", str(out / "checkpoint-6"))
        == 2
    )
    assert "checkpoint-6 belongs to a different run" in capsys.readouterr().err
    assert pretrain(other, *RESUME_RUN, "--resume_from_checkpoint", str(out / "final")) == 2
    assert "final is not a complete checkpoint (no trainer_state.json)" in capsys.readouterr().err
    assert pretrain(other, *RESUME_RUN, "--resume_from_checkpoint", "true") == 2
    assert "other holds no complete checkpoint" in capsys.readouterr().err
    assert not other.exists()


def test_resume_after_sigkill_equals_the_uninterrupted_run(reference_run, tmp_path):
    out = tmp_path / "killed"
    command = [
        sys.executable,
        str(REPO / "recipes" / "scripts" / "pretrain.py"),
        *RESUME_RUN,
        "--output_dir",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            steps = [s for s, _, _ in train_losses(out)] if (out / "metrics.jsonl").exists() else []
            if steps and max(steps) >= 5:
                break
            time.sleep(0.02)
        assert process.poll() is None, (
            f"the run ended before it could be killed: {process.stderr.read().decode()[-2000:]}"
        )
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not (out / "final").exists()
    assert pretrain(out, *RESUME_RUN) == 0
    assert_same_run(reference_run, out)


def _bad(tmp_path, *args):
    recipe = ["--config", str(RECIPE)] if "--config" not in args else []
    return pretrain_main([*recipe, *SMALL[2:], "--max_steps", "2", "--output_dir", str(tmp_path / "out"), *args])


def test_bad_inputs_are_reported_in_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    short = tmp_path / "short.txt"
    short.write_text("Exit, pursued by a bear.\n")
    different = tmp_path / "different"
    # The folder holds a run of the same recipe with another learning rate.
    other = parse_recipe_args(
        (ModelArguments, DataArguments, TrainArguments),
        [
            "--config",
            str(RECIPE),
            *SMALL[2:],
            "--max_steps",
            "2",
            "--output_dir",
            str(different / "out"),
            "--learning_rate",
            "0.5",
        ],
    )
    RunDirectory(different / "out", "pretrain", fingerprint_fields(*other)).claim(overwrite=False)
    foreign = tmp_path / "foreign"
    (foreign / "out").mkdir(parents=True)
    (foreign / "out" / "thesis.tex").write_text("\\begin{document}")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.read_text() + "warmup_stpes: 3\n")

    cases = {
        "unknown key": (["--config", str(recipe)], "unknown key(s) in"),
        "empty dataset": (["--train_files", str(empty)], "is empty"),
        "too-small dataset": (
            ["--train_files", str(short)],
            "too small: 8 tokens do not fill one block of max_length=64",
        ),
        "fewer blocks than a batch": (["--max_train_samples", "1"], "training data is too small: 1 blocks"),
        "sequence above the maximum": (
            ["--config_overrides", TINY_MODEL + ",max_position_embeddings=32"],
            "max_length=64 is above the model's max_position_embeddings=32",
        ),
        "tokenizer larger than the vocabulary": (
            ["--config_overrides", TINY_MODEL + ",vocab_size=1000"],
            "the tokenizer has 49152 tokens but the model's vocab_size is 1000",
        ),
        "unknown config override": (["--config_overrides", "hiden_size=64"], "unknown config field(s) hiden_size"),
    }
    for name, (args, message) in cases.items():
        case_dir = tmp_path / name.replace(" ", "-")
        case_dir.mkdir()
        assert _bad(case_dir, *args) == 2, name
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("pretrain: error: ")]
        assert len(errors) == 1 and message in errors[0], f"{name}: {err}"
        assert "Traceback" not in err, f"{name}: {err}"
        assert not (case_dir / "out" / "run.json").exists(), f"{name}: a failed start claimed the folder"

    assert _bad(different) == 2
    assert "already holds a different run (learning_rate: 0.5 there, 0.003 now)" in capsys.readouterr().err
    assert _bad(foreign) == 2
    assert "is not empty and holds no run.json" in capsys.readouterr().err


def test_local_text_files_streamed_and_resumed(tmp_path):
    """Local files through `datasets` (the path Hub corpora take), streamed and packed on the fly; a
    resumed streaming run replays the stream to its checkpoint and sees the same batches."""
    from modeling_shishu import assets

    plays = assets.shakespeare_texts("validation")
    (tmp_path / "train.txt").write_text(plays[0][:60_000])
    (tmp_path / "valid.txt").write_text(plays[1][:20_000])
    out = tmp_path / "run"
    args = [
        *SMALL,
        "--train_files",
        str(tmp_path / "train.txt"),
        "--eval_files",
        str(tmp_path / "valid.txt"),
        "--streaming",
        "--max_steps",
        "4",
        "--save_steps",
        "2",
        "--eval_steps",
        "4",
    ]
    assert pretrain(out, *args, "--stop_after_steps", "3") == 0
    stopped = {s: loss for s, loss, _ in train_losses(out)}
    assert pretrain(out, *args) == 0
    resumed = {s: loss for s, loss, _ in train_losses(out)}
    assert sorted(resumed) == [1, 2, 3, 4]
    assert resumed[3] == pytest.approx(stopped[3], abs=1e-6)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps"] == 4 and summary["tokens_seen"] == 4 * 2 * 64
    assert summary["final_eval"]["eval_loss"] < 11.5


def test_torch_compile_trains_like_the_eager_run(tmp_path):
    run = [
        *SMALL,
        "--max_steps",
        "3",
        "--save_steps",
        "100",
        "--dataset_test_split",
        "",
    ]  # no held-out graph to compile
    assert pretrain(tmp_path / "eager", *run) == 0
    assert pretrain(tmp_path / "compiled", *run, "--torch_compile", "true") == 0
    eager, compiled = train_losses(tmp_path / "eager"), train_losses(tmp_path / "compiled")
    assert [s for s, _, _ in compiled] == [1, 2, 3]
    assert [loss for _, loss, _ in compiled] == pytest.approx([loss for _, loss, _ in eager], rel=1e-3)
    summary = json.loads((tmp_path / "compiled" / "training_summary.json").read_text())
    assert summary["torch_compile"] is True
    # compiled in place: the saved model has the model's own parameter names
    weights = load_model_weights(tmp_path / "compiled" / "final")
    assert weights.keys() == load_model_weights(tmp_path / "eager" / "final").keys()


def test_report_to_tensorboard_writes_readable_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert (
        pretrain(
            out,
            *SMALL,
            "--max_steps",
            "4",
            "--save_steps",
            "4",
            "--eval_steps",
            "4",
            "--report_to",
            "tensorboard",
            "--run_name",
            "tiny-tb",
        )
        == 0
    )
    events = EventAccumulator(str(out / "runs" / "tiny-tb"))
    events.Reload()
    logged = [(s, loss) for s, loss, _ in train_losses(out)]
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(s, pytest.approx(v)) for s, v in logged]
    assert [e.step for e in events.Scalars("eval/loss")] == [4]
    assert {"train/lr", "train/grad_norm", "train/tokens_per_second"} <= set(events.Tags()["scalars"])


def test_report_to_is_checked_before_training(tmp_path, capsys):
    assert pretrain(tmp_path / "out", *SMALL, "--max_steps", "2", "--report_to", "tensorbord") == 2
    assert "report_to: 'tensorbord' is not one of none, all, tensorboard, wandb, trackio" in capsys.readouterr().err
    assert (
        parse_recipe_args(
            (ModelArguments, DataArguments, TrainArguments), [*SMALL, "--output_dir", "x", "--report_to", "none"]
        )[2].report_to
        == []
    )


def test_push_to_hub_pushes_final_through_the_checks_of_shishu_push(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    # Refused before anything is trained: no repository, or not a repository id.
    assert pretrain(tmp_path / "a", *SMALL, "--max_steps", "2", "--push_to_hub", "true") == 2
    assert "push_to_hub needs hub_model_id" in capsys.readouterr().err
    assert (
        pretrain(tmp_path / "b", *SMALL, "--max_steps", "2", "--push_to_hub", "true", "--hub_model_id", "no repo") == 2
    )
    assert "hub_model_id 'no repo' is not a valid repository id" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    # There is no Hub here: everything up to the upload runs, the upload calls are recorded.
    calls = []
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw))
    )
    monkeypatch.setattr(
        huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)) or "https://hub/commit"
    )
    out = tmp_path / "run"
    assert (
        pretrain(
            out,
            *SMALL,
            "--max_steps",
            "2",
            "--save_steps",
            "100",
            "--push_to_hub",
            "true",
            "--hub_model_id",
            "shishu/tiny-test",
            "--hub_private_repo",
            "true",
        )
        == 0
    )
    assert calls[0] == ("create", "shishu/tiny-test", {"private": True, "exist_ok": True, "repo_type": "model"})
    upload = calls[1][1]
    assert upload["repo_id"] == "shishu/tiny-test" and Path(upload["folder_path"]) == out / "final"
    assert {"config.json", "model.safetensors", "modeling_shishu.py", "tokenizer.json"} <= set(
        upload["allow_patterns"]
    )
    for name in upload["allow_patterns"]:  # the published records name no folder of this machine
        if name.endswith(".json"):
            assert str(tmp_path) not in (out / "final" / name).read_text(), name
    assert len(calls) == 2

    # A finished run started again with push_to_hub pushes without training; a broken final/ is refused.
    (out / "final" / "modeling_shishu.py").write_text("raise ImportError('stale')\n")
    assert (
        pretrain(
            out,
            *SMALL,
            "--max_steps",
            "2",
            "--save_steps",
            "100",
            "--push_to_hub",
            "true",
            "--hub_model_id",
            "shishu/tiny-test",
        )
        == 2
    )
    assert "differ from the remote code this version of shishulm writes" in capsys.readouterr().err
    assert len(calls) == 2
