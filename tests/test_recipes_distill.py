"""Healing recipe: a tiny Llama parent (real SmolLM2 tokenizer) converted with its top two layers MLP-only
and sharing, distilled back towards the parent on Shakespeare; the KL to the teacher must fall."""

import json
from pathlib import Path

import pytest
import torch

from modeling_shishu.training.distill import distillation_kl
from modeling_shishu.training.distill import main as distill_main
from modeling_shishu.training.metrics import read_metrics


REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "shishu-tiny" / "distill" / "config.yaml"


@pytest.fixture(scope="module")
def tiny_parent(tmp_path_factory):
    """A 4-layer d=64 LlamaForCausalLM with the SmolLM2 tokenizer. Its weights are random but large enough
    (std 0.1) that its next-token distributions are far from uniform, so there is a function to match."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from modeling_shishu.training.runner import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("parent") / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def distill(out, parent, *args) -> int:
    return distill_main(
        [
            "--config",
            str(RECIPE),
            "--teacher_name_or_path",
            str(parent),
            "--output_dir",
            str(out),
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
            *args,
        ]
    )


def test_distillation_kl_matches_its_definition():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    assert torch.allclose(distillation_kl(teacher, teacher), torch.zeros(2, 5), atol=1e-6)
    for temperature in (1.0, 2.0):
        p = torch.softmax(teacher / temperature, -1)
        expected = (p * (p.log() - torch.log_softmax(student / temperature, -1))).sum(-1) * temperature**2
        assert torch.allclose(distillation_kl(student, teacher, temperature), expected, atol=1e-6)
    assert (distillation_kl(student, teacher) > 0).all()


def test_distillation_lowers_the_kl_to_the_teacher(tiny_parent, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    code = distill(
        out,
        tiny_parent,
        "--max_steps",
        "12",
        "--eval_steps",
        "6",
        "--save_steps",
        "6",
        "--logging_steps",
        "3",
        "--learning_rate",
        "1e-3",
        "--warmup_steps",
        "0",
        "--kl_weight",
        "1",
        "--lm_weight",
        "0",
    )
    assert code == 0
    records = read_metrics(out / "metrics.jsonl")
    evals = [(r["step"], r["eval_kl"]) for r in records if "eval_kl" in r]
    assert [s for s, _ in evals] == [0, 6, 12]
    assert evals[0][1] > 0.05, "conversion should change the function measurably"
    assert evals[2][1] < 0.95 * evals[0][1], evals
    train = [r for r in records if "loss" in r]
    assert all({"kl", "lm_loss", "lr", "tokens_per_second"} <= r.keys() for r in train)
    assert all(r["loss"] == pytest.approx(r["kl"]) for r in train)  # kl_weight 1, lm_weight 0

    final = out / "final"
    config = json.loads((final / "config.json").read_text())
    assert config["model_type"] == "shishu"
    assert config["block_types"] == ["full_attention", "full_attention", "mlp", "mlp"]
    assert config["mlp_share_groups"] == [[2, 3]]
    # the healed model keeps the record of its layout, which its card reads
    conversion = json.loads((final / "conversion.json").read_text())
    assert conversion["mlp_layers"] == [2, 3] and conversion["mlp_share_groups"] == [[2, 3]]
    assert conversion["layer_selection"]["rule"] == "top"
    student = AutoModelForCausalLM.from_pretrained(final, trust_remote_code=True)
    teacher = AutoModelForCausalLM.from_pretrained(tiny_parent)
    # Attention layers were trained too: the student's weights moved away from the parent's.
    assert not torch.equal(
        student.model.layers[0].self_attn.q_proj.weight, teacher.model.layers[0].self_attn.q_proj.weight
    )
    assert student.generation_config.eos_token_id == teacher.config.eos_token_id


def test_a_missing_or_broken_teacher_folder_is_named(tiny_parent, tmp_path, capsys):
    """A teacher path that does not exist is not sent to the Hub client as a repository id, and a folder whose
    weights are cut short is refused before training."""
    missing = tmp_path / "no" / "such" / "teacher"
    assert distill(tmp_path / "out", missing, "--tokenizer_name", str(tiny_parent), "--max_steps", "2") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"distill: error: no such checkpoint folder: {missing}"
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_parent.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert distill(tmp_path / "out2", broken, "--tokenizer_name", str(tiny_parent), "--max_steps", "2") == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("distill: error: ") and "model.safetensors" in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2" / "final").exists()


def test_a_non_llama_teacher_is_refused(tiny_parent, tmp_path, capsys):
    """The teacher must be a Llama-family parent that conversion accepts."""
    from modeling_shishu import ShishuConfig, ShishuForCausalLM

    shishu = tmp_path / "shishu-teacher"
    config = ShishuConfig(
        vocab_size=49152,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    ShishuForCausalLM(config).save_pretrained(shishu)
    assert distill(tmp_path / "out", shishu, "--tokenizer_name", str(tiny_parent), "--max_steps", "2") == 2
    assert "not Llama-family" in capsys.readouterr().err
