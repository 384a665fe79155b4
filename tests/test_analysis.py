"""Layer analysis on tiny random models: the fit, the removal costs against an independent computation,
the recommendation rule, the outputs and `convert --layers auto`."""

import json

import pytest
import torch
from conftest import save_parent, tiny_llama, tiny_texts, tiny_tokenizer

from modeling_shishu.cli import main as shishu_main
from modeling_shishu.conversion.analysis import LayerAnalysis, _spread, analyze_layers, lowest_cost_pairs, make_windows
from modeling_shishu.conversion.convert import convert_checkpoint, convert_model


pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(context_length=16, fit_tokens=512, eval_tokens=128, ablation_tokens=128, batch_size=8)


@pytest.fixture(scope="module")
def tiny_analysis():
    torch.manual_seed(0)
    model = tiny_llama()
    return model, analyze_layers(model, tiny_tokenizer(), tiny_texts(), ks=[2, 3], **SMALL)


def test_rows_and_removal_cost_match_an_independent_computation(tiny_analysis):
    model, analysis = tiny_analysis
    assert [row.layer for row in analysis.rows] == list(range(6))
    for row in analysis.rows:
        assert -1.0 <= row.cosine <= 1.0 and row.update_ratio > 0
        assert row.r2 <= row.train_r2 + 1e-6 or row.r2 < 1  # held-out is not scored on the fit tokens
    # The analysis runs layers one by one from cached inputs; check it against the model's own forward
    # with o_proj zeroed (attention contributes nothing, the residual passes through).
    _, eval_windows = make_windows(tiny_tokenizer(), tiny_texts(), 16, 512, 128)
    windows = eval_windows[torch.tensor(_spread(len(eval_windows), 8))]
    with torch.no_grad():
        baseline = model(windows, labels=windows).loss.item()
        assert analysis.baseline_loss == pytest.approx(baseline, abs=1e-5)
        layer = model.model.layers[3].self_attn.o_proj
        saved = layer.weight.clone()
        layer.weight.zero_()
        dropped = model(windows, labels=windows).loss.item()
        layer.weight.copy_(saved)
    assert analysis.rows[3].removal_cost == pytest.approx(dropped - baseline, abs=1e-5)


def test_linear_fit_is_exact_when_attention_is_linear():
    # With one token per window attention sees only its own token: o_proj(v_proj(x)), a linear map.
    model = tiny_llama()
    analysis = analyze_layers(
        model,
        tiny_tokenizer(),
        tiny_texts(),
        context_length=1,
        fit_tokens=400,
        eval_tokens=100,
        ablation_tokens=0,
        ridge=1e-9,
        batch_size=100,
    )
    assert min(row.r2 for row in analysis.rows) > 0.9999
    assert analysis.baseline_loss is None and analysis.rows[0].removal_cost is None
    with pytest.raises(ValueError, match="no removal costs"):
        analysis.recommend(2)
    with pytest.raises(ValueError, match="context_length must be >= 2"):
        analyze_layers(model, tiny_tokenizer(), tiny_texts(), context_length=1, fit_tokens=400, eval_tokens=100)
    # Over a real context it is not linear in the token's own input, and the held-out score says so.
    analysis = analyze_layers(model, tiny_tokenizer(), tiny_texts(), **SMALL)
    assert max(row.r2 for row in analysis.rows) < 0.99


def test_recommendation_rule(tiny_analysis):
    _, analysis = tiny_analysis
    for k in (2, 3):
        measured = analysis.candidates[k]
        assert "top" in measured
        for candidate in measured.values():
            assert len(candidate["layers"]) == k and candidate["shared_pairs"] <= k // 2
        recommendation = analysis.recommend(k)
        best_pairs = max(c["shared_pairs"] for c in measured.values())
        eligible = [c["joint_cost"] for c in measured.values() if c["shared_pairs"] == best_pairs]
        assert recommendation.joint_cost == min(eligible)
        assert analysis.shared_pairs(recommendation.layers) == k // 2
    # a K that was not measured jointly falls back to the single costs and says so
    fallback = analysis.recommend(4)
    assert fallback.joint_cost is None and "not measured" in fallback.description and len(fallback.layers) == 4
    with pytest.raises(ValueError, match="k must be between 1 and 6"):
        analysis.recommend(7)
    restored = LayerAnalysis.from_dict(json.loads(json.dumps(analysis.to_dict())))
    assert restored.recommend(2) == analysis.recommend(2)


def test_lowest_cost_pairs():
    costs = {0: 5.0, 1: 0.1, 2: 0.2, 3: 3.0, 4: 0.3, 5: 0.3}
    assert lowest_cost_pairs(costs, 2) == [1, 2]
    assert lowest_cost_pairs(costs, 4) == [1, 2, 4, 5]
    assert lowest_cost_pairs(costs, 5) == [1, 2, 3, 4, 5]  # two pairs and the cheapest remaining single
    assert lowest_cost_pairs({0: 1.0, 2: 1.0, 4: 1.0}, 2) is None  # no two adjacent attention layers


def test_analysis_of_a_shishu_model_skips_mlp_only_layers():
    shishu = convert_model(tiny_llama(), num_mlp_layers=2)
    analysis = analyze_layers(shishu, tiny_tokenizer(), tiny_texts(), ks=[2], **SMALL)
    assert [row.layer_type for row in analysis.rows] == ["full_attention"] * 4 + ["mlp"] * 2
    assert analysis.rows[5].r2 is None and analysis.rows[3].r2 is not None
    assert analysis.candidates[2]["top"]["layers"] == [2, 3]


def test_too_little_text_is_a_clear_error():
    with pytest.raises(ValueError, match="give more text or fewer tokens"):
        analyze_layers(tiny_llama(), tiny_tokenizer(), ["w4 w5 w6"], **SMALL)


def test_cli_writes_table_json_and_png(tmp_path, capsys):
    parent_dir = save_parent(tiny_llama(), tmp_path / "parent")
    text_file = tmp_path / "held_out.txt"
    text_file.write_text("\n".join(tiny_texts()))
    out = tmp_path / "analysis"
    code = shishu_main(
        [
            "analyze",
            "--model",
            str(parent_dir),
            "--data",
            str(text_file),
            "--k",
            "2",
            "--out",
            str(out),
            "--context-length",
            "16",
            "--fit-tokens",
            "512",
            "--eval-tokens",
            "128",
            "--ablation-tokens",
            "64",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    table = captured.out
    assert "held-out R2" in table and "k=2: recommend layers" in table
    # A progress bar on stderr (one step per forward pass) that ends full.
    bars = [line for line in captured.err.replace("\r", "\n").splitlines() if line.startswith("analyzing layers:")]
    done, total = bars[-1].split("|")[2].split()[0].split("/")
    assert bars[-1].startswith("analyzing layers: 100%") and done == total and int(total) > 6, bars[-1]
    data = json.loads((out / "layer_analysis.json").read_text())
    assert len(data["rows"]) == 6 and "2" in data["recommendations"]
    assert (out / "layer_analysis.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # `convert --layers-from` converts exactly the layers the analysis recommended, without re-analysing.
    converted = tmp_path / "converted"
    assert (
        shishu_main(
            [
                "convert",
                "--parent",
                str(parent_dir),
                "--mlp-layers",
                "2",
                "--layers-from",
                str(out),
                "--out",
                str(converted),
            ]
        )
        == 0
    )
    record = json.loads((converted / "conversion.json").read_text())
    assert record["mlp_layers"] == data["recommendations"]["2"]["layers"]
    assert record["layer_selection"]["rule"] == f"analysis ({data['recommendations']['2']['rule']})"
    capsys.readouterr()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**data, "rows": data["rows"][:4]}))
    for extra, message in [
        (["--layers", "1,2", "--layers-from", str(out)], "give either --layers or --layers-from"),
        (["--mlp-layers", "2", "--layers-from", str(other)], "analyses 4 layers but the parent has 6"),
        (["--mlp-layers", "2", "--layers-from", str(tmp_path / "none")], "no layer analysis at"),
    ]:
        assert shishu_main(["convert", "--parent", str(parent_dir), *extra, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_convert_layers_auto_uses_the_recommendation(tmp_path):
    parent = tiny_llama()
    parent_dir = save_parent(parent, tmp_path / "parent")
    out = convert_checkpoint(
        parent_dir,
        tmp_path / "shishu",
        num_mlp_layers=2,
        mlp_layers="auto",
        analysis_data=tiny_texts(),
        analysis_options=SMALL,
    )
    record = json.loads((out / "conversion.json").read_text())
    expected = analyze_layers(parent, tiny_tokenizer(), tiny_texts(), ks=[2], **SMALL).recommend(2)
    assert record["mlp_layers"] == expected.layers
    assert record["layer_selection"]["rule"] == f"auto ({expected.rule})"
    assert record["layer_selection"]["joint_attention_removal_cost"] == pytest.approx(expected.joint_cost)
    assert record["sizes"]["share_groups"] == 1
