"""The GPU path: ShishuLM on CUDA against transformers' Llama, the three caches, CUDA graphs, gradient
checkpointing and bf16 training, and the benchmark's CUDA measurements.

    python -m pytest tests/test_cuda.py                          # on a GPU machine, under two minutes
    SHISHU_TEST_DEVICE=cpu python -m pytest tests/test_cuda.py   # the same checks on the CPU (no CUDA graphs)

Skipped without a GPU unless `SHISHU_TEST_DEVICE` names a device. flash_attention_2 runs where the
`flash-attn` package is installed.
"""

import os

import pytest
import torch
from conftest import tiny_config_kwargs
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicCache, StaticCache
from transformers.generation.configuration_utils import CompileConfig
from transformers.utils import is_flash_attn_2_available

from modeling_shishu import ShishuConfig, ShishuForCausalLM
from modeling_shishu import bench as benchmark


DEVICE = torch.device(os.environ.get("SHISHU_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
ON_CUDA = DEVICE.type == "cuda"

pytestmark = pytest.mark.skipif(
    not ON_CUDA and not os.environ.get("SHISHU_TEST_DEVICE"), reason="needs a CUDA GPU (or SHISHU_TEST_DEVICE=cpu)"
)

# Large enough for the GPU kernels to matter (head_dim 32 fits every attention backend), small enough to
# compile in seconds. initializer_range 0.2: with the default 0.02 attention barely changes the output,
# and a broken cache would go unnoticed.
SHAPE = dict(
    vocab_size=256,
    hidden_size=128,
    intermediate_size=256,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    initializer_range=0.2,
)
HYBRID = dict(num_hidden_layers=6, layer_types=["full_attention"] * 3 + ["mlp"] * 3, mlp_share_groups=[[3, 4]])


def config_kwargs(**overrides):
    return tiny_config_kwargs(**{**SHAPE, **overrides})


def hybrid_model(**overrides) -> ShishuForCausalLM:
    torch.manual_seed(0)
    return ShishuForCausalLM(ShishuConfig(**config_kwargs(**HYBRID, **overrides))).to(DEVICE).eval()


def prompt(batch: int = 2, length: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(3, SHAPE["vocab_size"], (batch, length), generator=generator).to(DEVICE)


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# ----------------------------------------------------------------------------------------------------
# Same function as transformers' Llama


@pytest.mark.parametrize(
    "attn_implementation, dtype",
    [
        ("sdpa", torch.float32),
        ("sdpa", torch.bfloat16),
        ("eager", torch.float32),
        ("flash_attention_2", torch.bfloat16),
    ],
)
def test_all_attention_logits_equal_llama_on_the_same_weights(attn_implementation, dtype):
    if attn_implementation == "flash_attention_2" and not (ON_CUDA and is_flash_attn_2_available()):
        pytest.skip("flash-attn is not installed (or no GPU)")
    kwargs = config_kwargs(num_hidden_layers=4, tie_word_embeddings=True)
    torch.manual_seed(0)
    llama = LlamaForCausalLM._from_config(LlamaConfig(**kwargs), attn_implementation=attn_implementation)
    shishu = ShishuForCausalLM._from_config(ShishuConfig(**kwargs), attn_implementation=attn_implementation)
    missing, unexpected = shishu.load_state_dict(llama.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    llama, shishu = llama.to(DEVICE, dtype).eval(), shishu.to(DEVICE, dtype).eval()
    assert shishu.config._attn_implementation == attn_implementation

    input_ids = prompt(batch=2, length=24)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :5] = 0  # left padding: the masked path of every backend
    with torch.no_grad():
        for mask in (None, attention_mask):
            expected = llama(input_ids, attention_mask=mask).logits
            actual = shishu(input_ids, attention_mask=mask).logits
            valid = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask.bool()
            # The same kernels run in both; bf16 allows for a different reduction order.
            tolerance = 1e-5 if dtype == torch.float32 else 2e-2 * expected[valid].float().abs().max().item()
            assert _max_difference(actual[valid], expected[valid]) <= tolerance


# ----------------------------------------------------------------------------------------------------
# Caches


def test_attention_matters_in_the_test_model():
    """The checks below would pass on a model that ignores its context; this one does not."""
    model = hybrid_model()
    ids = prompt()
    with torch.no_grad():
        full = model(ids).logits[:, -1]
        last_token_only = model(ids[:, -1:]).logits[:, -1]
    assert _max_difference(full, last_token_only) > 0.1


@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
def test_incremental_decoding_equals_the_full_forward(cache_kind):
    model = hybrid_model()
    ids = prompt(length=16)
    with torch.no_grad():
        full = model(ids).logits
        if cache_kind == "dynamic":
            cache = DynamicCache(config=model.config)
        else:
            cache = StaticCache(config=model.config, max_cache_len=32)
        steps = [model(ids[:, :10], past_key_values=cache, use_cache=True).logits[:, -1]]
        for position in range(10, 16):
            steps.append(model(ids[:, position : position + 1], past_key_values=cache, use_cache=True).logits[:, -1])
    incremental = torch.stack(steps[:-1], dim=1)
    assert _max_difference(incremental, full[:, 9:15]) <= 1e-4
    # only the three attention layers hold keys and values
    assert sum(getattr(layer, "keys", None) is not None and layer.keys.numel() > 0 for layer in cache.layers) == 3


def test_greedy_tokens_are_equal_without_cache_and_with_the_dynamic_and_static_caches():
    model = hybrid_model()
    ids = prompt()
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    no_cache = model.generate(ids, use_cache=False, **kwargs)
    dynamic = model.generate(ids, cache_implementation="dynamic", **kwargs)
    static = model.generate(ids, cache_implementation="static", disable_compile=True, **kwargs)
    assert no_cache.shape == (2, ids.shape[1] + 12)
    assert torch.equal(dynamic, no_cache)
    assert torch.equal(static, no_cache)


def test_compiled_decode_with_cuda_graphs_equals_eager():
    from torch._dynamo.utils import counters

    model = hybrid_model()
    ids = prompt()
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, cache_implementation="static")
    eager = model.generate(ids, disable_compile=True, **kwargs)
    torch._dynamo.reset()
    counters.clear()
    # reduce-overhead: the decode step is recorded once as a CUDA graph and replayed (no graphs on CPU).
    compile_config = CompileConfig(fullgraph=True, dynamic=False, mode="reduce-overhead" if ON_CUDA else "default")
    compile_config._compile_all_devices = True  # transformers auto-compiles only on accelerators otherwise
    compiled = model.generate(ids, compile_config=compile_config, **kwargs)
    assert hasattr(model, "_compiled_call")
    assert counters["stats"]["unique_graphs"] >= 1
    if ON_CUDA:
        assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])
    assert torch.equal(compiled, eager)


# ----------------------------------------------------------------------------------------------------
# Training


def test_gradient_checkpointing_gives_the_gradients_of_the_unshared_twin():
    """A shared pair's owner collects the gradients of both layers that run it, with or without
    checkpointing: the sum of the gradients of an unshared model holding the same weights twice."""
    shared = hybrid_model().train()
    unshared = (
        ShishuForCausalLM(ShishuConfig(**config_kwargs(**{**HYBRID, "mlp_share_groups": []}))).to(DEVICE).train()
    )
    state = shared.state_dict()
    state.update({key.replace("layers.3.", "layers.4."): value for key, value in state.items() if "layers.3." in key})
    unshared.load_state_dict(state, strict=False)
    ids = prompt(batch=2, length=32)

    unshared(ids, labels=ids).loss.backward()
    shared.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert shared.is_gradient_checkpointing
    loss = shared(ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    owner, twin_3, twin_4 = (
        m.model.layers[i].mlp.gate_proj.weight for m, i in ((shared, 3), (unshared, 3), (unshared, 4))
    )
    torch.testing.assert_close(owner.grad, twin_3.grad + twin_4.grad, atol=1e-5, rtol=1e-4)
    attention = shared.model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(
        attention.grad, unshared.model.layers[0].self_attn.q_proj.weight.grad, atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize("precision", ["bf16 weights", "bf16 autocast"])
def test_bf16_training_steps_lower_the_loss_and_train_the_shared_pair(precision):
    model = hybrid_model().train()
    if precision == "bf16 weights":
        model = model.to(torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = prompt(batch=4, length=64)
    owner = model.model.layers[3].mlp.down_proj.weight
    before = owner.detach().clone()
    losses = []
    for _ in range(6):
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=precision == "bf16 autocast"):
            loss = model(ids, labels=ids).loss
        loss.backward()
        assert torch.isfinite(loss), losses
        assert owner.grad is not None and torch.isfinite(owner.grad).all() and owner.grad.abs().sum() > 0
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    assert not torch.equal(owner.detach(), before)
    assert model.model.layers[4].extra_repr() == "runs model.layers[3]"  # still one set of weights


# ----------------------------------------------------------------------------------------------------
# The benchmark on this device


@pytest.mark.skipif(not ON_CUDA, reason="the kernel profile reads CUDA activity")
def test_kernel_profile_of_a_decode_step():
    hybrid = hybrid_model()
    all_attention = ShishuForCausalLM(ShishuConfig(**config_kwargs(num_hidden_layers=6))).to(DEVICE).eval()
    counts = {}
    with torch.no_grad():
        for name, model in (("hybrid", hybrid), ("all attention", all_attention)):
            cache = DynamicCache(config=model.config)
            ids = prompt()
            model(ids, past_key_values=cache, use_cache=True)
            profile = benchmark.profile_kernels(
                lambda: model(ids[:, -1:], past_key_values=cache, use_cache=True), str(DEVICE)
            )
            assert profile["kernels"] > 0 and profile["kernel_ms"] > 0 and profile["kernel_launches"] > 0
            assert profile["longest_kernels"][0]["count"] >= 1
            counts[name] = profile["kernels"]
    assert counts["hybrid"] < counts["all attention"]  # three layers without attention, norms or cache


def test_benchmark_runs_on_this_device_with_random_weights(tmp_path):
    import torch._inductor.config as inductor_config

    parent = tmp_path / "parent"
    LlamaConfig(**config_kwargs(num_hidden_layers=6, initializer_range=0.02)).save_pretrained(parent)
    settings = benchmark.BenchSettings(
        device=str(DEVICE),
        dtype="bfloat16",
        shapes=[(2, 16)],
        compile=True,
        repeats=2,
        decode_tokens=2,
        train_seq_len=32,
        train_batch=2,
        train_repeats=2,
        bandwidth_bytes=4 * 2**20,
        random_init=True,
        mlp_layers=[3, 4, 5],
        overhead_check=False,
    )
    fusion_options = []
    report = benchmark.run_benchmark(
        None,
        str(parent),
        settings,
        log=lambda _: fusion_options.append(dict(inductor_config.post_grad_fusion_options)),
    )
    assert report["models"]["shishu"]["mlp_share_groups"] == [[3, 4]]
    assert report["models"]["shishu"]["dtype"] == "bfloat16"
    rows = report["inference"]
    assert {(r["mode"], r["batch"], r["context"], r["model"]) for r in rows} == {
        (mode, 2, 16, role) for mode in ("eager", "compile") for role in ("shishu", "baseline")
    }
    assert all(r["decode_per_token"]["median_ms"] > 0 and r["prefill"]["median_ms"] > 0 for r in rows)
    training = report["training"]["shishu"]
    assert training["tokens_per_s"] > 0 and training["model_flops_per_token"] > 0
    if ON_CUDA:
        assert report["machine"]["timer"] == "cuda events" and report["machine"]["device_name"]
        assert all(r["peak_bytes"] > report["models"][r["model"]]["weight_bytes"] for r in rows)
        assert all(r["decode_kernels"]["kernels"] > 0 for r in rows if r["mode"] == "eager")
        # CUDA graphs: the compiled step is replayed as a graph
        assert all(r["cudagraph_skips"] == 0 for r in rows if r["mode"] == "compile")
        assert all(r["decode_kernels"]["graph_launches"] >= 1 for r in rows if r["mode"] == "compile")
        # the CPU-only inductor setting (fused single-row matmuls) is left alone on CUDA
        assert all("decompose_mm_pass" not in options for options in fusion_options)
        assert training["mfu"] is None or 0 < training["mfu"] < 1
    text = benchmark.format_report(report)
    assert "Training step (forward + backward, batch 2 x 32 tokens)" in text
