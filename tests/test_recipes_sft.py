"""Instruction tuning recipe (TRL SFTTrainer) on the offline ShareGPT conversations: LoRA adapter that
merges into a model reloading with remote code, exact resume, clear errors. A tiny ShishuLM with the
real SmolLM2 tokenizer (ChatML template)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import current_umask

from modeling_shishu.training.metrics import read_metrics
from modeling_shishu.training.sft import LLAMA_LORA_TARGETS
from modeling_shishu.training.sft import main as sft_main


REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "shishu-tiny" / "sft" / "config.yaml"


@pytest.fixture(scope="module")
def tiny_shishu(tmp_path_factory):
    """A randomly initialised 4-layer ShishuLM (top two layers MLP-only, shared) saved with the tokenizer."""
    from modeling_shishu import ShishuConfig, ShishuForCausalLM
    from modeling_shishu.training.runner import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    config = ShishuConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        layer_types=["full_attention"] * 2 + ["mlp"] * 2,
        mlp_share_groups=[[2, 3]],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("base") / "tiny-shishu"
    ShishuForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # as `shishu convert` leaves it: the fine-tuned model must carry the record over
    (folder / "conversion.json").write_text(json.dumps(CONVERSION_RECORD))
    return folder


CONVERSION_RECORD = {"mlp_layers": [2, 3], "mlp_share_groups": [[2, 3]], "share": "pairs", "pair_init": "mean"}


SMALL = [
    "--max_train_samples",
    "8",
    "--num_eval_samples",
    "2",
    "--max_length",
    "64",
    "--per_device_train_batch_size",
    "2",
    "--per_device_eval_batch_size",
    "2",
    "--logging_steps",
    "1",
    "--disable_tqdm",
    "true",
]


def sft(out, model, *args) -> int:
    return sft_main(
        ["--config", str(RECIPE), "--model_name_or_path", str(model), "--output_dir", str(out), *SMALL, *args]
    )


def logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def test_lora_adapter_merges_into_a_model_that_reloads_with_remote_code(tiny_shishu, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    assert (
        sft(out, tiny_shishu, "--max_steps", "4", "--save_steps", "2", "--eval_steps", "4", "--learning_rate", "5e-3")
        == 0
    )
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert any("eval_loss" in r for r in records) and all("lr" in r for r in records if "loss" in r)
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("checkpoint-", "."))) == [
        "checkpoint-2",
        "checkpoint-4",
    ]

    adapter = out / "adapter"
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == sorted(LLAMA_LORA_TARGETS)
    assert adapter_config["base_model_name_or_path"] == str(tiny_shishu)

    # What a user does with the adapter: base + adapter -> merge -> save -> reload with remote code.
    base = AutoModelForCausalLM.from_pretrained(tiny_shishu, trust_remote_code=True)
    input_ids = torch.tensor([[1, 9690, 198, 42, 314, 2, 1]])
    base_logits = logits(base, input_ids)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    assert (tmp_path / "merged" / "modeling_shishu.py").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", trust_remote_code=True)
    assert reloaded.config.mlp_share_groups == [[2, 3]]
    assert not torch.allclose(logits(reloaded, input_ids), base_logits, atol=1e-4), "the adapter changed nothing"

    # final/ is that merged model, Hub-ready.
    final = AutoModelForCausalLM.from_pretrained(out / "final", trust_remote_code=True)
    torch.testing.assert_close(logits(final, input_ids), logits(reloaded, input_ids), rtol=0, atol=1e-5)
    assert final.config.use_cache is True
    tokenizer = AutoTokenizer.from_pretrained(out / "final", trust_remote_code=True)
    assert final.generation_config.eos_token_id == tokenizer.eos_token_id
    assert "<|im_start|>" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["world_size"] == 1 and summary["peft"] is True and summary["steps"] == 4
    assert json.loads((out / "final" / "conversion.json").read_text()) == CONVERSION_RECORD
    tokenizer_config = json.loads((out / "final" / "tokenizer_config.json").read_text())
    assert not {"is_local", "local_files_only"} & tokenizer_config.keys()
    assert (out / "final" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~current_umask()


def test_resume_after_a_stop_equals_the_uninterrupted_run(tiny_shishu, tmp_path):
    args = [
        "--max_steps",
        "4",
        "--save_steps",
        "2",
        "--eval_strategy",
        "no",
        "--num_eval_samples",
        "0",
        "--use_peft",
        "false",
    ]
    assert sft(tmp_path / "reference", tiny_shishu, *args) == 0
    stopped = tmp_path / "stopped"
    assert sft(stopped, tiny_shishu, *args, "--stop_after_steps", "3") == 0
    assert not (stopped / "final").exists() and (stopped / "checkpoint-2").is_dir()
    assert sft(stopped, tiny_shishu, *args) == 0  # the same command continues from checkpoint-2

    def losses(run):
        return [(r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl") if "loss" in r]

    reference, resumed = losses(tmp_path / "reference"), losses(stopped)
    assert [s for s, _ in resumed] == [1, 2, 3, 4]
    assert [v for _, v in resumed] == pytest.approx([v for _, v in reference], abs=1e-6)

    # From a given checkpoint: the first one of the finished run, into a new folder.
    again = tmp_path / "again"
    assert sft(again, tiny_shishu, *args, "--resume_from_checkpoint", str(stopped / "checkpoint-2")) == 0
    assert [v for _, v in losses(again)] == pytest.approx([v for _, v in reference][2:], abs=1e-6)


def test_bad_inputs_are_reported_in_one_line(tiny_shishu, tmp_path, capsys):
    no_messages = tmp_path / "rows.jsonl"
    no_messages.write_text('{"prompt": "hi", "completion": "hello"}\n' * 4)
    no_assistant = tmp_path / "user_only.jsonl"
    no_assistant.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n' * 4)
    empty_file = tmp_path / "empty.jsonl"
    empty_file.write_text("")
    cases = {
        "empty file": (["--train_files", str(empty_file)], f"{empty_file} is empty: no conversations to train on"),
        "missing file": (["--train_files", str(tmp_path / "nothing.jsonl")], "no such data file"),
        "missing column": (["--train_files", str(no_messages)], "has no column 'messages'"),
        "empty dataset": (["--train_files", str(no_assistant)], "training data is empty"),
        "too small": (
            ["--max_train_samples", "1", "--num_eval_samples", "0"],
            "training data is too small: 1 conversations",
        ),
        "length above the maximum": (
            ["--max_length", "1024"],
            "max_length=1024 is above the model's max_position_embeddings=512",
        ),
        "unknown key": (["--lora_rank", "8"], "unknown command-line arguments: --lora_rank 8"),
        "push without a repository": (["--push_to_hub", "true"], "push_to_hub needs hub_model_id"),
    }
    for name, (args, message) in cases.items():
        assert sft(tmp_path / name.replace(" ", "-"), tiny_shishu, "--max_steps", "1", *args) == 2, name
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("sft: error: ")]
        assert len(errors) == 1 and message in errors[0], f"{name}: {err}"


def test_tensorboard_and_push_to_hub_as_in_a_handbook_recipe(tiny_shishu, tmp_path, monkeypatch):
    import huggingface_hub
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    calls = []
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id))
    )
    monkeypatch.setattr(
        huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)) or "url"
    )
    out = tmp_path / "run"
    assert (
        sft(
            out,
            tiny_shishu,
            "--max_steps",
            "2",
            "--save_steps",
            "100",
            "--eval_strategy",
            "no",
            "--num_eval_samples",
            "0",
            "--use_peft",
            "false",
            "--report_to",
            "tensorboard",
            "--run_name",
            "tiny-sft",
            "--push_to_hub",
            "true",
            "--hub_model_id",
            "shishu/tiny-sft-test",
        )
        == 0
    )
    (logdir,) = (out / "runs").iterdir()  # the Trainer's own TensorBoard callback
    events = EventAccumulator(str(logdir))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    # The Trainer pushed nothing itself; final/ went once through the checks of `shishu push`.
    assert [call[0] for call in calls] == ["create", "upload"]
    assert calls[1][1]["repo_id"] == "shishu/tiny-sft-test" and Path(calls[1][1]["folder_path"]) == out / "final"


def test_assistant_only_loss_trains_the_replies_and_their_end_of_turn():
    from modeling_shishu.training.runner import load_tokenizer
    from modeling_shishu.training.sft import CHATML_TEMPLATE, with_generation_markers

    tokenizer = load_tokenizer("smollm2-135m")
    parent_template = tokenizer.chat_template
    messages = [
        {"role": "user", "content": "Who wrote Hamlet?"},
        {"role": "assistant", "content": "Shakespeare."},
        {"role": "user", "content": "When?"},
        {"role": "assistant", "content": "About 1600."},
    ]
    expected = tokenizer.apply_chat_template(messages, tokenize=False)
    for template in (parent_template, CHATML_TEMPLATE):
        tokenizer.chat_template = with_generation_markers(template)
        assert with_generation_markers(tokenizer.chat_template) == tokenizer.chat_template
        if template is parent_template:
            assert tokenizer.apply_chat_template(messages, tokenize=False) == expected  # the markers render as nothing
        encoded = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
        trained = [token for token, mask in zip(encoded["input_ids"], encoded["assistant_masks"]) if mask]
        assert tokenizer.decode(trained) == "Shakespeare.<|im_end|>About 1600.<|im_end|>"
    with pytest.raises(ValueError, match="set chat_template_path"):
        with_generation_markers("{% for m in messages %}{{ m['content'] }}{% endfor %}")


def test_chatml_fallback_sets_the_end_of_turn_as_eos(tiny_shishu, tmp_path, monkeypatch):
    from transformers import AutoTokenizer, GenerationConfig

    from modeling_shishu.training import sft as sft_module

    trainers = []
    trainer_class = sft_module._atomic_sft_trainer_class()

    def recording_trainer(**kwargs):
        trainers.append(trainer_class(**kwargs))
        return trainers[-1]

    monkeypatch.setattr(sft_module, "_atomic_sft_trainer_class", lambda: recording_trainer)

    base = tmp_path / "no-template"
    shutil.copytree(tiny_shishu, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    config["eos_token"] = "<|endoftext|>"  # a base model's tokenizer
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    assert AutoTokenizer.from_pretrained(base).chat_template is None
    out = tmp_path / "run"
    assert (
        sft(
            out,
            base,
            "--max_steps",
            "1",
            "--save_steps",
            "100",
            "--eval_strategy",
            "no",
            "--num_eval_samples",
            "0",
            "--use_peft",
            "false",
        )
        == 0
    )
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    assert tokenizer.eos_token == "<|im_end|>" and "{% generation %}" in tokenizer.chat_template
    assert GenerationConfig.from_pretrained(out / "final").eos_token_id == tokenizer.convert_tokens_to_ids(
        "<|im_end|>"
    )
    # The recipe's assistant_only_loss: the loss sees the reply (cut at max_length here), not the user's turn.
    row = trainers[0].train_dataset[0]
    text = tokenizer.decode(row["input_ids"])
    trained = tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != -100])
    assert text.startswith("<|im_start|>user\n") and "<|im_start|>assistant\n" + trained in text
    assert trained and "<|im_start|>" not in trained
