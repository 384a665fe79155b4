"""Local fitting of converted MLP-only blocks on tiny parents: errors fall, the result reloads, sharing stays."""

import json

import pytest
import torch
from conftest import save_parent, tiny_llama, tiny_texts, tiny_tokenizer
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from modeling_shishu.cli import main as shishu_main
from modeling_shishu.conversion.convert import convert_checkpoint, convert_model
from modeling_shishu.conversion.fitting import (
    FitSettings,
    calibration_windows,
    fit_groups,
    fit_mlp_only_blocks,
    relative_error,
)


pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = dict(tokens=1024, context_length=32, steps=60, batch_tokens=256, learning_rate=3e-3)


def trained_parent():
    """A tiny Llama whose MLPs do distinct, non-trivial work (large init). Attention is silenced in layers 2-4,
    the ones converted below, so what a conversion loses there is the sharing of a pair's MLP: what fitting is
    for (random tokens give attention nothing a block could learn to predict)."""
    torch.manual_seed(0)
    parent = tiny_llama(num_hidden_layers=6, initializer_range=0.1)
    with torch.no_grad():
        for layer_idx in (2, 3, 4):
            parent.model.layers[layer_idx].self_attn.o_proj.weight.zero_()
    return parent


def group_errors(parent, model, windows) -> list[float]:
    """Relative error of each MLP-only group on `windows`, entered with the parent's own hidden state."""
    with torch.no_grad():
        states = parent(windows, output_hidden_states=True).hidden_states
    errors = []
    for group in fit_groups(model.config, parent.config.num_hidden_layers):
        inputs = states[group[0]].reshape(-1, states[0].shape[-1])
        target = states[group[-1] + 1].reshape(-1, states[0].shape[-1])
        block = model.model.layers[group[0]]
        with torch.no_grad():
            outputs = inputs
            for _ in group:
                outputs = block(outputs)
        errors.append(relative_error(outputs, target, inputs))
    return errors


@pytest.mark.parametrize("init", ["union", "converted"])
def test_fitting_lowers_the_error_of_a_shared_pair_on_held_out_tokens(init):
    parent = trained_parent()
    model = convert_model(parent, mlp_layers=[2, 3, 4], share="pairs")  # one shared pair (2, 3) and a single (4)
    assert fit_groups(model.config, 6) == [[2, 3], [4]]
    tokenizer = tiny_tokenizer()
    calibration = calibration_windows(tokenizer, tiny_texts(seed=1), SETTINGS["tokens"], SETTINGS["context_length"])
    held_out = calibration_windows(tokenizer, tiny_texts(seed=2), 512, 32)
    before = group_errors(parent, model, held_out)[0]
    record = fit_mlp_only_blocks(parent, model, calibration, FitSettings(init=init, **SETTINGS), show_progress=False)
    after = group_errors(parent, model, held_out)[0]
    assert after < 0.8 * before, (before, after)  # the pair, entered with the parent's own state on held-out text
    assert [g["layers"] for g in record["groups"]] == [[2, 3], [4]]
    for group in record["groups"]:
        errors = group["relative_error"]
        assert errors["fitted"] < errors["converted"]
    assert record["tokens"] == 1024
    # the fitted model as a whole is closer to the parent too
    with torch.no_grad():
        fresh = convert_model(parent, mlp_layers=[2, 3, 4], share="pairs")
        reference = torch.log_softmax(parent(held_out).logits, -1)

        def kl(candidate):
            return torch.nn.functional.kl_div(
                torch.log_softmax(candidate(held_out).logits, -1), reference, log_target=True, reduction="batchmean"
            ).item()

        assert kl(model) < kl(fresh)


def test_fitting_is_deterministic_for_a_seed():
    parent = trained_parent()
    calibration = calibration_windows(tiny_tokenizer(), tiny_texts(seed=1), 512, 32)
    weights = []
    for _ in range(2):
        model = convert_model(parent, mlp_layers=[2, 3], share="pairs")
        fit_mlp_only_blocks(parent, model, calibration, FitSettings(**{**SETTINGS, "steps": 10}), show_progress=False)
        weights.append(model.model.layers[2].mlp.down_proj.weight.clone())
    assert torch.equal(weights[0], weights[1])


def test_fitted_checkpoint_reloads_with_remote_code_and_stores_a_pair_once(tmp_path):
    parent_dir = save_parent(trained_parent(), tmp_path / "parent")
    out = convert_checkpoint(
        parent_dir,
        tmp_path / "fitted",
        mlp_layers=[2, 3],
        share="pairs",
        fit=FitSettings(**SETTINGS),
        fit_texts=tiny_texts(seed=1),
    )
    record = json.loads((out / "conversion.json").read_text())
    assert record["fit"]["calibration_corpus"] == "custom texts"
    assert record["fit"]["settings"]["steps"] == 60 and len(record["fit"]["groups"]) == 1
    with safe_open(out / "model.safetensors", "pt") as handle:
        keys = set(handle.keys())
    assert "model.layers.2.mlp.gate_proj.weight" in keys
    assert not any(key.startswith("model.layers.3.") for key in keys)
    reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    pair = reloaded.model.layers[2]
    held_out = calibration_windows(tiny_tokenizer(), tiny_texts(seed=2), 256, 32)
    parent = AutoModelForCausalLM.from_pretrained(parent_dir).eval()
    with torch.no_grad():
        states = parent(held_out, output_hidden_states=True).hidden_states
        inputs = states[2].reshape(-1, states[2].shape[-1])
        fitted = relative_error(pair(pair(inputs)), states[4].reshape(-1, states[4].shape[-1]), inputs)
    assert (
        fitted
        < 0.8 * json.loads((out / "conversion.json").read_text())["fit"]["groups"][0]["relative_error"]["converted"]
    )


def test_cli_fit_options(tmp_path, capsys):
    parent_dir = save_parent(trained_parent(), tmp_path / "parent")
    texts = tmp_path / "calibration.txt"
    texts.write_text("\n".join(tiny_texts(seed=3)))
    code = shishu_main(
        [
            "convert",
            "--parent",
            str(parent_dir),
            "--layers",
            "2,3",
            "--fit-tokens",
            "512",
            "--fit-steps",
            "5",
            "--fit-data",
            str(texts),
            "--out",
            str(tmp_path / "a"),
        ]
    )
    assert code == 0
    assert "fitted 1 MLP-only blocks on 512 tokens" in capsys.readouterr().out
    assert (
        shishu_main(
            ["convert", "--parent", str(parent_dir), "--layers", "2,3", "--no-fit", "--out", str(tmp_path / "b")]
        )
        == 0
    )
    assert json.loads((tmp_path / "b" / "conversion.json").read_text())["fit"] is None
    assert (
        shishu_main(
            [
                "convert",
                "--parent",
                str(parent_dir),
                "--layers",
                "2,3",
                "--no-fit",
                "--fit-steps",
                "3",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    assert "--no-fit turns off" in capsys.readouterr().err
    assert (
        shishu_main(
            [
                "convert",
                "--parent",
                str(parent_dir),
                "--layers",
                "2,3",
                "--fit-tokens",
                "0",
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )
    assert "fit tokens must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_calibration_windows_sample_the_whole_corpus_and_cross_text_ends():
    tokenizer = tiny_tokenizer()
    texts = [" ".join(["w4"] * 300), " ".join(["w5"] * 10), " ".join(["w6"] * 300)]
    windows = calibration_windows(tokenizer, texts, tokens=6 * 32, context_length=32)
    assert windows.shape == (6, 32)
    first_tokens = windows[:, 0].tolist()
    assert first_tokens[0] == tokenizer.convert_tokens_to_ids("w4") and first_tokens[
        -1
    ] == tokenizer.convert_tokens_to_ids("w6")
    short = calibration_windows(tokenizer, [" ".join(["w7"] * 5), " ".join(["w8"] * 50)], tokens=32, context_length=32)
    assert tokenizer.eos_token_id in short[0].tolist()  # the window went on into the next text
    with pytest.raises(ValueError, match="fewer than 32 tokens"):
        calibration_windows(tokenizer, ["w4 w5"], tokens=32, context_length=32)
    with pytest.raises(ValueError, match="empty"):
        calibration_windows(tokenizer, ["  "], tokens=32, context_length=32)
