"""`shishu bench`: its arithmetic, its measurements on tiny models, a --quick run end to end, and the fast
paths of the model it relies on (grouped-query SDPA on CPU, static cache + torch.compile).

Correctness only: speed is checked by running the benchmark, never by a timed test.
"""

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config_kwargs
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicCache, StaticCache
from transformers.generation.configuration_utils import CompileConfig

import modeling_shishu.modeling_shishu as modeling
from modeling_shishu import ShishuConfig, ShishuForCausalLM
from modeling_shishu import bench as benchmark
from modeling_shishu.cli import main


TARGETS_FILE = Path(__file__).resolve().parents[1] / "docs" / "bench_targets.yaml"
HYBRID_LAYOUT = dict(
    num_hidden_layers=6,
    layer_types=["full_attention"] * 3 + ["mlp"] * 3,
    mlp_share_groups=[[3, 4]],
)


def hybrid_model(**overrides) -> ShishuForCausalLM:
    return ShishuForCausalLM(ShishuConfig(**tiny_config_kwargs(**{**HYBRID_LAYOUT, **overrides}))).eval()


# ----------------------------------------------------------------------------------------------------
# Arithmetic


def test_summarize_reports_median_and_interpolated_percentiles():
    summary = benchmark.summarize([0.004, 0.001, 0.003, 0.002, 0.005])
    assert summary["median_ms"] == pytest.approx(3.0)
    assert summary["p10_ms"] == pytest.approx(1.4)  # 40% of the way from 1 ms to 2 ms
    assert summary["p90_ms"] == pytest.approx(4.6)
    assert summary["min_ms"] == pytest.approx(1.0)
    assert summary["n"] == 5
    assert benchmark.summarize([0.002])["p90_ms"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no samples"):
        benchmark.summarize([])


def test_unique_parameters_count_shared_groups_and_tied_embeddings_once():
    config = ShishuConfig(**tiny_config_kwargs(**HYBRID_LAYOUT))
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    shared = ShishuForCausalLM(config)
    unshared = ShishuForCausalLM(ShishuConfig(**tiny_config_kwargs(**{**HYBRID_LAYOUT, "mlp_share_groups": []})))
    untied = ShishuForCausalLM(ShishuConfig(**tiny_config_kwargs(**HYBRID_LAYOUT, tie_word_embeddings=False)))

    count, nbytes = benchmark.unique_parameters(shared)
    assert nbytes == 4 * count
    # one shared pair saves exactly one MLP and its norm; an untied head adds one vocab x hidden matrix
    assert benchmark.unique_parameters(unshared)[0] - count == 3 * h * i + h
    assert benchmark.unique_parameters(untied)[0] - count == v * h
    assert benchmark.unique_parameters(shared.to(torch.bfloat16)) == (count, 2 * count)


def test_decode_weight_bytes_reads_an_untied_input_table_only_at_the_batch_rows():
    tied = hybrid_model()
    untied = hybrid_model(tie_word_embeddings=False)
    h, v = tied.config.hidden_size, tied.config.vocab_size
    assert benchmark.decode_weight_bytes(tied, batch=3) == benchmark.unique_parameters(tied)[1]
    expected = benchmark.unique_parameters(untied)[1] - 4 * v * h + 4 * 3 * h
    assert benchmark.decode_weight_bytes(untied, batch=3) == expected


def test_kv_cache_bytes_are_read_from_the_cache_object():
    model = hybrid_model()
    config = model.config
    per_token = 2 * 3 * config.num_key_value_heads * config.head_dim * 4  # K and V, 3 attention layers, float32
    input_ids = torch.randint(3, 99, (2, 10))
    with torch.inference_mode():
        dynamic = model(input_ids, use_cache=True).past_key_values
        static = StaticCache(config=config, max_cache_len=16)
        model(input_ids, past_key_values=static, use_cache=True)
    assert benchmark.kv_cache_bytes(dynamic) == per_token * 2 * 10
    assert benchmark.kv_cache_bytes(static) == per_token * 2 * 16  # a static cache holds max_cache_len slots
    assert benchmark.bandwidth_limit_tokens_per_s(10e9, 10**9, batch=1) == pytest.approx(10.0)
    assert benchmark.bandwidth_limit_tokens_per_s(10e9, 10**9, batch=4) == pytest.approx(40.0)


@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
def test_rewound_cache_repeats_the_same_decode_steps(cache_kind):
    model = hybrid_model()
    input_ids = torch.randint(3, 99, (1, 8))
    steps = torch.randint(3, 99, (1, 3))
    cache = (
        DynamicCache(config=model.config)
        if cache_kind == "dynamic"
        else StaticCache(config=model.config, max_cache_len=12)
    )
    with torch.inference_mode():
        model(input_ids, past_key_values=cache, use_cache=True)
        runs = []
        for _ in range(2):
            logits = [model(steps[:, t : t + 1], past_key_values=cache, use_cache=True).logits for t in range(3)]
            runs.append(torch.cat(logits, dim=1))
            benchmark.rewind_cache(cache, 8)
            assert int(cache.get_seq_length()) == 8
        full = model(torch.cat([input_ids, steps], dim=1)).logits[:, 8:]
    torch.testing.assert_close(runs[0], runs[1], atol=0, rtol=0)
    torch.testing.assert_close(runs[0], full, atol=1e-5, rtol=1e-5)


def test_profile_step_counts_only_what_the_step_allocates_and_every_aten_op():
    existing = torch.ones(2**20)  # 4 MiB that exists before the step: not counted, even when freed inside

    def step():
        nonlocal existing
        first = torch.ones(2**20)  # 4 MiB
        second = torch.ones(2**21)  # + 8 MiB -> 12 MiB live
        del first
        existing = None
        third = torch.ones(2**19)  # 8 + 2 MiB live
        del second, third

    peak, aten_ops = benchmark.profile_step(step)
    assert 12 * 2**20 <= peak < 13 * 2**20
    assert aten_ops >= 3  # three torch.ones (each dispatches nested aten ops too)
    _, one_more = benchmark.profile_step(lambda: torch.ones(4) + 1)
    _, fewer = benchmark.profile_step(lambda: torch.ones(4))
    assert one_more > fewer


def test_memory_bandwidth_measurement_and_settings_checks():
    result = benchmark.measure_memory_bandwidth(nbytes=4 * 2**20, repeats=2)
    assert result["copy_bytes"] == 4 * 2**20 and result["bytes_per_s"] > 0
    with pytest.raises(ValueError, match="contexts"):
        benchmark.BenchSettings(contexts=[0]).check()
    with pytest.raises(ValueError, match="dtype"):
        benchmark.BenchSettings(dtype="float33").check()
    with pytest.raises(ValueError, match="decode_tokens"):
        benchmark.BenchSettings(decode_tokens=0).check()
    quick = benchmark.BenchSettings.quick(contexts=[32])
    assert quick.contexts == [32] and quick.train_seq_len == 128 and quick.modes == ["eager"]
    with pytest.raises(ValueError, match="shapes"):
        benchmark.BenchSettings(shapes=[(0, 16)]).check()
    with pytest.raises(ValueError, match="random-init"):
        benchmark.BenchSettings(mlp_layers=[4, 5]).check()
    with pytest.raises(ValueError, match="inductor"):
        benchmark.BenchSettings(compile_backend="eager", compile_mode="reduce-overhead").check()
    assert benchmark.BenchSettings(batches=[1, 8], contexts=[16, 32]).points == [(1, 16), (1, 32), (8, 16), (8, 32)]
    assert benchmark.BenchSettings(batches=[1, 8], shapes=[(1, 512), (32, 4096)]).points == [(1, 512), (32, 4096)]


def test_cuda_gets_cuda_graphs_and_none_of_the_cpu_inductor_settings():
    import torch._inductor.config as inductor_config

    cpu, cuda = benchmark.BenchSettings(compile=True), benchmark.BenchSettings(compile=True, device="cuda")
    assert cpu.decode_compile_mode is None and cuda.decode_compile_mode == "reduce-overhead"
    assert benchmark.BenchSettings(device="cuda", compile_backend="eager").decode_compile_mode is None
    before = inductor_config.post_grad_fusion_options
    with benchmark.compile_settings(cuda):
        assert inductor_config.post_grad_fusion_options == before
    with benchmark.compile_settings(cpu):
        assert "decompose_mm_pass" in inductor_config.post_grad_fusion_options
    assert inductor_config.post_grad_fusion_options == before


def test_forward_flops_count_shared_layers_per_use_and_causal_attention():
    model = hybrid_model()  # h 32, FFN 64, 4 heads / 2 KV heads of 8, vocab 99; layers 3 and 4 share
    attention = 32 * 32 + 2 * 32 * 16 + 32 * 32  # q, k, v, o
    mlp = 3 * 32 * 64
    projections = 3 * (attention + mlp) + 3 * mlp  # the shared pair's weights run twice
    causal_keys = 5 * 6 // 2  # 5 queries attend 1 + 2 + ... + 5 keys
    expected = 2 * (2 * 5 * projections + 2 * 1 * 99 * 32 + 3 * 2 * 2 * 4 * 8 * causal_keys)
    assert benchmark.forward_flops(model, batch=2, tokens=5, logits_tokens=1) == expected
    weights = benchmark.decode_matmul_weights(model)
    assert len(weights) == 3 * 7 + 3 * 3 + 1  # decoder layers, MLP-only layers (shared ones per use), LM head
    assert weights[21] is weights[24]  # layer 4 multiplies by layer 3's gate projection
    assert sum(w.numel() for w in weights) == projections + 99 * 32


def _row(model, mode, context, prefill_ms, decode_ms, kv_bytes, bytes_read, fraction):
    return {
        "model": model,
        "mode": mode,
        "batch": 1,
        "context": context,
        "kv_cache_bytes": kv_bytes,
        "prefill_flops": 1000 if model == "baseline" else 850,
        "prefill": {"median_ms": prefill_ms},
        "decode_per_token": {"median_ms": decode_ms},
        "kv_cache_bytes_per_token": kv_bytes / context,
        "bytes_read_per_step": bytes_read,
        "fraction_of_bandwidth_limit": fraction,
    }


def test_ratios_and_targets_on_a_known_report():
    report = {
        "models": {
            "shishu": {
                "unique_parameters": 836,
                "weight_bytes": 3344,
                "kv_cache_bytes_per_token": 20.0,
                "attention_layers": 20,
            },
            "baseline": {
                "unique_parameters": 1000,
                "weight_bytes": 4000,
                "kv_cache_bytes_per_token": 30.0,
                "attention_layers": 30,
            },
        },
        "inference": [
            _row("baseline", "eager", 2048, 1200.0, 60.0, 30 * 2048, 100, 0.55),
            _row("shishu", "eager", 2048, 1000.0, 48.0, 20 * 2048, 80, 0.60),
            _row("baseline", "compile", 2048, 1180.0, 50.0, 30 * 2048, 100, 0.52),
            _row("shishu", "compile", 2048, 1000.0, 40.0, 20 * 2048, 80, 0.45),
        ],
        "training": {
            "baseline": {"step": {"median_ms": 900.0}, "peak_bytes": 2000, "flops": 1100},
            "shishu": {"step": {"median_ms": 800.0}, "peak_bytes": 1600, "flops": 1000},
        },
    }
    ratios = {(r["figure"], r.get("mode")): r for r in benchmark.compare(report, "baseline", "shishu")}
    assert ratios[("decode_ms_per_token", "eager")]["ratio"] == pytest.approx(1.25)
    assert ratios[("prefill_ms", "compile")]["ratio"] == pytest.approx(1.18)
    assert ratios[("unique_parameters", None)]["change"] == pytest.approx(-0.164)
    assert ratios[("kv_cache_bytes_per_token", None)]["change"] == pytest.approx(-1 / 3)
    assert ratios[("kv_cache_bytes", "eager")]["ratio"] == pytest.approx(1.5)
    assert ratios[("training_peak_bytes", None)]["ratio"] == pytest.approx(1.25)
    assert ("kv_cache_bytes", "compile") not in ratios  # static caches are sized by max_cache_len, not compared

    report["ratios"] = list(ratios.values())
    assert benchmark.evaluate_targets(report, {}) == []  # no targets file: no verdicts
    docs_targets = benchmark.load_targets(TARGETS_FILE)
    targets = {
        t["target"].split(" (")[0] if t["target"].startswith("KV") else t["target"]: t
        for t in benchmark.evaluate_targets(report, docs_targets)
    }
    assert targets["KV cache per token -33.3%"]["met"] is True
    assert targets["decode ratio at 2048 (eager) >= 1.20"]["met"] is True
    assert targets["decode ratio at 2048 (eager) >= 1.20"]["limit"] == pytest.approx(1.25)  # bytes read 100 / 80
    assert targets["training step ratio >= 1.15"]["limit"] == pytest.approx(1.1)  # FLOPs 1100 / 1000
    assert targets["prefill ratio at 2048 (eager) >= 1.18"]["met"] is True
    assert targets["prefill ratio at 2048 (compile) >= 1.18"]["met"] is True  # 1180 / 1000 = 1.18 exactly
    assert targets["training step ratio >= 1.15"]["met"] is False  # 900 / 800 = 1.125
    bandwidth = next(t for t in targets.values() if t["target"].startswith("decode >="))
    # per model, the faster mode counts: baseline eager 55%, ShishuLM eager 60% -> the lowest is 55%
    assert bandwidth["met"] is True and bandwidth["value"].startswith("lowest 55.0%")

    # Overhead: eager and training figures (same kernels in both classes) must sit in the band; compile
    # figures (ShishuLM's in-kernel GQA) only must not be slower.
    report["overhead"] = [
        {"figure": "decode_ms_per_token", "mode": "eager", "ratio": 0.99},
        {"figure": "prefill_ms", "mode": "eager", "ratio": 1.02},
        {"figure": "training_step_ms", "ratio": 1.01},
        {"figure": "decode_ms_per_token", "mode": "compile", "ratio": 1.40},
    ]
    targets = {t["target"].split(" (")[0]: t for t in benchmark.evaluate_targets(report, docs_targets)}
    same_kernels = targets["all-attention ShishuLM vs baseline class, same kernels"]
    assert same_kernels["met"] is True and same_kernels["value"] == "0.990-1.020 over 3 figures, median 1.010"
    assert targets["all-attention ShishuLM vs baseline class, compile mode"]["met"] is True
    report["overhead"][0]["ratio"] = 0.95
    targets = {t["target"].split(" (")[0]: t for t in benchmark.evaluate_targets(report, docs_targets)}
    assert targets["all-attention ShishuLM vs baseline class, same kernels"]["met"] is False


# ----------------------------------------------------------------------------------------------------
# The command end to end on tiny checkpoints


@pytest.fixture
def tiny_pair(tmp_path):
    """A tiny Llama parent and a ShishuLM made from it (top 2 of 6 layers MLP-only, shared as a pair)."""
    llama_config = LlamaConfig(**tiny_config_kwargs(max_position_embeddings=256))
    parent = LlamaForCausalLM(llama_config)
    parent.save_pretrained(tmp_path / "parent")
    shishu = ShishuForCausalLM(ShishuConfig.from_llama_config(llama_config, num_mlp_layers=2))
    shishu.save_pretrained(tmp_path / "shishu")
    return tmp_path / "shishu", tmp_path / "parent"


def test_quick_run_in_both_modes_writes_json_plot_and_table(tiny_pair, tmp_path, capsys):
    model, parent = tiny_pair
    out_json, out_plot = tmp_path / "out" / "bench.json", tmp_path / "out" / "bench.png"
    code = main(
        [
            "bench",
            "--model",
            str(model),
            "--baseline",
            str(parent),
            "--quick",
            "--contexts",
            "8,16",
            "--train-seq-len",
            "16",
            "--threads",
            "1",
            "--bandwidth-mib",
            "4",
            "--decode-tokens",
            "2",
            # the logit checks below are float32 bounds (the default, native, is bfloat16 where the CPU has it)
            "--dtype",
            "float32",
            "--clock",
            "cpu",
            "--compile",
            "--compile-backend",
            "eager",
            "--json",
            str(out_json),
            "--plot",
            str(out_plot),
            "--targets",
            str(TARGETS_FILE),
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert "| mode | batch | context | prefill baseline |" in stdout and "| compile | 1 | 16 |" in stdout

    report = json.loads(out_json.read_text())
    assert set(report["models"]) == {"shishu", "baseline", "shishu_all_attention"}
    assert report["models"]["shishu_all_attention"]["max_abs_logit_difference_vs_baseline"] <= 1e-5
    rows = report["inference"]
    assert {(r["mode"], r["context"], r["model"]) for r in rows} == {
        (mode, context, role) for mode in ("eager", "compile") for context in (8, 16) for role in report["models"]
    }
    assert report["settings"]["clock"] == "cpu"
    assert all(report["matmul_floor"][role]["1"]["n"] == 2 * 3 for role in report["models"])
    for row in rows:
        assert row["decode_per_token"]["n"] == 3 * 2 and row["prefill"]["n"] == 3
        assert row["matmul_floor_fraction_of_bandwidth_limit"] > 0
        assert 0 < row["fraction_of_bandwidth_limit"] and row["bytes_read_per_step"] > 0
        if row["mode"] == "compile":
            assert row["compile_seconds"] >= 0 and row["static_cache_bytes"] > 0
    kv = next(r for r in report["ratios"] if r["figure"] == "kv_cache_bytes_per_token")
    assert kv["change"] == pytest.approx(-2 / 6, abs=1e-12)  # measured from the cache: 4 of 6 layers attend
    assert {r["figure"] for r in report["overhead"]} >= {"prefill_ms", "decode_ms_per_token", "training_step_ms"}
    assert report["training"]["shishu"]["peak_bytes"] > report["models"]["shishu"]["weight_bytes"]
    assert any(t["target"].startswith("KV cache per token") and t["met"] for t in report["targets"])
    # the same weights in ShishuLM code dispatch exactly the aten ops of transformers' Llama; the hybrid fewer
    ops = report["aten_ops"]
    assert ops["shishu_all_attention"] == ops["baseline"]
    assert all(ops["shishu"][k] < ops["baseline"][k] for k in ("prefill", "decode_step", "training_step"))

    assert out_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out_json.parent.iterdir()) == ["bench.json", "bench.png"]  # no temporaries


def test_random_weights_from_a_config_folder_at_chosen_shapes(tmp_path, capsys):
    """Only config.json is read; the ShishuLM is the baseline's config with the given layers MLP-only."""
    LlamaConfig(**tiny_config_kwargs(max_position_embeddings=256)).save_pretrained(tmp_path / "parent")
    assert not list((tmp_path / "parent").glob("*.safetensors"))
    out_json = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--random-init",
            "--baseline",
            str(tmp_path / "parent"),
            "--mlp-layers",
            "2,3",
            "--shapes",
            "1x8,2x16",
            "--repeats",
            "2",
            "--decode-tokens",
            "2",
            "--train-seq-len",
            "16",
            "--train-batch",
            "2",
            "--threads",
            "1",
            "--bandwidth-mib",
            "4",
            "--peak-tflops",
            "0.001",
            "--no-overhead-check",
            "--json",
            str(out_json),
        ]
    )
    assert code == 0
    report = json.loads(out_json.read_text())
    shishu = report["models"]["shishu"]
    assert shishu["mlp_share_groups"] == [[2, 3]] and shishu["attention_layers"] == 4
    assert "layers 2,3 MLP-only" in shishu["source"]
    assert {(r["batch"], r["context"]) for r in report["inference"]} == {(1, 8), (2, 16)}
    training = report["training"]["shishu"]
    assert training["tokens_per_s"] == pytest.approx(2 * 16 / (training["step"]["median_ms"] / 1e3))
    assert training["mfu"] == pytest.approx(training["model_flops_per_token"] * training["tokens_per_s"] / 1e9)
    stdout = capsys.readouterr().out
    assert "batch 2 x 16 tokens" in stdout
    assert report["targets"] == [] and "| target |" not in stdout  # no --targets: ratios, no verdicts
    # seeded: the same weights in every run
    settings = benchmark.BenchSettings(random_init=True)
    first = benchmark.load_model(tmp_path / "parent", settings)
    assert torch.equal(first.lm_head.weight, benchmark.load_model(tmp_path / "parent", settings).lm_head.weight)


def test_bad_input_is_one_clear_error(tiny_pair, tmp_path, capsys):
    model, parent = tiny_pair
    assert main(["bench", "--model", str(tmp_path / "missing"), "--baseline", str(parent), "--quick"]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err  # loading.resolve_checkpoint's wording
    assert (
        main(
            [
                "bench",
                "--model",
                str(parent),
                "--baseline",
                str(parent),
                "--quick",
                "--threads",
                "1",
                "--bandwidth-mib",
                "4",
            ]
        )
        == 2
    )
    assert "must be a ShishuLM checkpoint" in capsys.readouterr().err
    assert main(["bench", "--model", str(model), "--baseline", str(parent), "--contexts", "300"]) == 2
    assert "max_position_embeddings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--model", str(model), "--baseline", str(parent), "--contexts", "a,b"])
    with pytest.raises(SystemExit):
        main(["bench", "--model", str(model), "--baseline", str(parent), "--shapes", "1x2x3"])
    assert main(["bench", "--baseline", str(parent), "--quick"]) == 2
    assert "--model or --mlp-layers" in capsys.readouterr().err
    assert (
        main(
            [
                "bench",
                "--model",
                str(model),
                "--baseline",
                str(parent),
                "--mlp-layers",
                "4,5",
                "--random-init",
                "--quick",
            ]
        )
        == 2
    )
    assert "--model or --mlp-layers" in capsys.readouterr().err
    bad_targets = tmp_path / "targets.yaml"
    for text, message in (("decode_ratio: fast\n", "decode_ratio must be a number"), ("speed: 2\n", "unknown target")):
        bad_targets.write_text(text)
        argv = ["bench", "--model", str(model), "--baseline", str(parent), "--targets", str(bad_targets)]
        assert main(argv) == 2
        assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# The model's fast paths that the benchmark measures


def test_masked_attention_on_cpu_uses_the_kernel_gqa_and_matches_llama(monkeypatch):
    kwargs = tiny_config_kwargs(tie_word_embeddings=False)  # LlamaConfig's default
    llama = LlamaForCausalLM(LlamaConfig(**kwargs)).eval()
    shishu = ShishuForCausalLM(ShishuConfig(**kwargs)).eval()
    shishu.load_state_dict(llama.state_dict(), strict=False)
    calls = []
    real = modeling.sdpa_grouped_query_attention

    def recording(*args, **kw):
        calls.append(args[1].shape)
        return real(*args, **kw)

    monkeypatch.setattr(modeling, "sdpa_grouped_query_attention", recording)
    input_ids = torch.randint(3, 99, (2, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :4] = 0  # left padding: a mask, so transformers would expand K/V per query head
    with torch.inference_mode():
        expected = llama(input_ids, attention_mask=attention_mask).logits
        actual = shishu(input_ids, attention_mask=attention_mask).logits
    assert len(calls) == kwargs["num_hidden_layers"]
    valid = attention_mask.bool()
    torch.testing.assert_close(actual[valid], expected[valid], atol=1e-5, rtol=1e-5)


def test_static_cache_generate_with_torch_compile_on_the_hybrid_model():
    model = hybrid_model()
    prompt = torch.randint(3, 99, (1, 6))
    expected = model.generate(prompt, max_new_tokens=6, do_sample=False)
    compile_config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
    compile_config._compile_all_devices = True  # transformers only auto-compiles on accelerators otherwise
    actual = model.generate(
        prompt, max_new_tokens=6, do_sample=False, cache_implementation="static", compile_config=compile_config
    )
    assert hasattr(model, "_compiled_call")  # the decode steps really ran compiled (fullgraph: no graph breaks)
    assert torch.equal(actual, expected)


def test_inductor_gemv_turns_single_row_matmuls_into_reductions_and_is_restored():
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    before = inductor_config.post_grad_fusion_options
    weight, x = torch.randn(3000, 64), torch.randn(1, 64)  # 3000 outputs: above inductor's default CPU bound
    torch._dynamo.reset()
    counters.clear()
    try:
        with benchmark.inductor_fused_gemv():
            compiled = torch.compile(lambda a, w: torch.nn.functional.linear(a, w), fullgraph=True, dynamic=False)
            with torch.inference_mode():
                torch.testing.assert_close(
                    compiled(x, weight), torch.nn.functional.linear(x, weight), atol=1e-4, rtol=1e-5
                )
    finally:
        torch._dynamo.reset()
    assert counters["inductor"]["decompose_mm"] + counters["inductor"]["decompose_addmm"] >= 1
    assert inductor_config.post_grad_fusion_options == before
