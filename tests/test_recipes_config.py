"""Recipe configuration, accelerate launch configs, data order, schedules, FLOPs and run folders.

No training here: every test runs in well under a second or two.
"""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import tiny_config_kwargs
from safetensors.torch import save_file

from modeling_shishu import ShishuConfig, ShishuForCausalLM
from modeling_shishu.precision import cpu_has_native_bf16, default_device, has_native_bf16
from modeling_shishu.sizes import applied_parameters
from modeling_shishu.sizes import training_flops_per_token as flops_per_token
from modeling_shishu.training.arguments import (
    DataArguments,
    DistillArguments,
    ModelArguments,
    TrainArguments,
    parse_overrides,
    parse_recipe_args,
)
from modeling_shishu.training.checkpointing import load_optimizer_state, save_optimizer_state
from modeling_shishu.training.data import PackedBlocks, ShuffledBatches, StreamingBatches, eval_batches
from modeling_shishu.training.metrics import plot_loss_curve, read_metrics
from modeling_shishu.training.run_directory import RunDirectory
from modeling_shishu.training.trainer import learning_rate_multiplier, resolve_mixed_precision


REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
PRETRAIN_TYPES = (ModelArguments, DataArguments, TrainArguments)
DISTILL_TYPES = (DistillArguments, DataArguments, TrainArguments)


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- parsing


def test_yaml_then_command_line_overrides(tmp_path):
    config = write_yaml(
        tmp_path / "c.yaml",
        "config_name: smollm2-135m\noutput_dir: out\nlearning_rate: 3e-4\nmax_steps: 10\n"
        "config_overrides: {hidden_size: 64}\ntrain_files: [a.txt, b.txt]\n",
    )
    model_args, data_args, train_args = parse_recipe_args(
        PRETRAIN_TYPES, ["--config", str(config), "--max_steps", "7"]
    )
    # YAML 1.1 reads 3e-4 as a string: the parser converts it with the field's type.
    assert train_args.learning_rate == pytest.approx(3e-4) and isinstance(train_args.learning_rate, float)
    assert train_args.max_steps == 7  # the command line wins over the file
    assert model_args.config_overrides == {"hidden_size": 64}
    assert data_args.train_files == ["a.txt", "b.txt"]
    assert train_args.eval_steps == train_args.save_steps  # default follows save_steps


def test_unknown_key_in_the_file_names_it(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", "config_name: smollm2-135m\noutput_dir: out\nlearnin_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) in .*'learnin_rate' \(did you mean 'learning_rate'\?\)"):
        parse_recipe_args(PRETRAIN_TYPES, ["--config", str(config)])


def test_unknown_command_line_flag_is_an_error(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", "config_name: smollm2-135m\noutput_dir: out\n")
    with pytest.raises(ValueError, match="unknown command-line arguments: --no_such_field 3"):
        parse_recipe_args(PRETRAIN_TYPES, ["--config", str(config), "--no_such_field", "3"])


def test_bad_values_are_named(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", "config_name: smollm2-135m\noutput_dir: out\nmax_steps: many\n")
    with pytest.raises(ValueError, match="max_steps: cannot read 'many'"):
        parse_recipe_args(PRETRAIN_TYPES, ["--config", str(config)])
    # YAML's own types: a whole-number field refuses 2.5 and true, a float field reads 3 as 3.0
    for value in ("2.5", "true"):
        config = write_yaml(
            tmp_path / "c.yaml", f"config_name: smollm2-135m\noutput_dir: out\nper_device_train_batch_size: {value}\n"
        )
        with pytest.raises(ValueError, match=f"per_device_train_batch_size: cannot read {value.replace('t', 'T')}"):
            parse_recipe_args(PRETRAIN_TYPES, ["--config", str(config)])
    config = write_yaml(
        tmp_path / "c.yaml",
        "config_name: smollm2-135m\noutput_dir: out\nper_device_train_batch_size: 4.0\nweight_decay: 1\n",
    )
    train_args = next(
        a for a in parse_recipe_args(PRETRAIN_TYPES, ["--config", str(config)]) if isinstance(a, TrainArguments)
    )
    assert train_args.per_device_train_batch_size == 4 and isinstance(train_args.weight_decay, float)
    with pytest.raises(ValueError, match="lr_scheduler_type must be"):
        TrainArguments(output_dir="x", lr_scheduler_type="exponential")
    with pytest.raises(ValueError, match="exactly one of config_name"):
        ModelArguments()
    with pytest.raises(ValueError, match="not 'key=value'"):
        parse_overrides("hidden_size")
    assert parse_overrides("hidden_size=64,tie_word_embeddings=false") == {
        "hidden_size": 64,
        "tie_word_embeddings": False,
    }


def test_fields_have_the_training_arguments_names_and_old_names_still_parse(tmp_path, caplog):
    old = write_yaml(
        tmp_path / "old.yaml",
        "config_name: smollm2-135m\noutput_dir: out\nmixed_precision: bf16\nwarmup_ratio: 0.05\nmax_seq_length: 64\n"
        "dataset_config_name: sample-10BT\ntrain_split: train[:90%]\neval_split: train[90%:]\nresume: true\n",
    )
    _, data_args, train_args = parse_recipe_args(PRETRAIN_TYPES, ["--config", str(old)])
    assert (train_args.bf16, train_args.fp16, train_args.warmup_steps) == (True, False, 0.05)
    assert (data_args.max_length, data_args.dataset_config) == (64, "sample-10BT")
    assert (data_args.dataset_train_split, data_args.dataset_test_split) == ("train[:90%]", "train[90%:]")
    assert train_args.resume_from_checkpoint is None  # continuing the last checkpoint is what a run does anyway
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 7 and all("\n" not in w and "is deprecated" in w for w in warnings)
    assert f"{old}: max_seq_length is deprecated and will be removed in the next release: use max_length" in warnings

    # The same on the command line, a bare boolean flag included.
    caplog.clear()
    new = write_yaml(tmp_path / "new.yaml", "config_name: smollm2-135m\noutput_dir: out\n")
    argv = ["--config", str(new), "--mixed_precision", "fp16", "--warmup_ratio=0.1", "--eval_split", "", "--resume"]
    _, data_args, train_args = parse_recipe_args(PRETRAIN_TYPES, argv)
    assert (train_args.bf16, train_args.fp16, train_args.warmup_steps, data_args.dataset_test_split) == (
        None,
        True,
        0.1,
        None,
    )
    assert len([r for r in caplog.records if "deprecated" in r.getMessage()]) == 4
    _, _, train_args = parse_recipe_args(PRETRAIN_TYPES, ["--config", str(new), "--mixed_precision", "no"])
    assert (train_args.bf16, train_args.fp16) == (False, False)
    assert (
        parse_recipe_args(PRETRAIN_TYPES, ["--config", str(new), "--bf16"])[2].bf16 is True
    )  # a bare flag, as for the Trainer

    with pytest.raises(ValueError, match="max_length and its old name max_seq_length are both set; keep max_length"):
        parse_recipe_args(
            PRETRAIN_TYPES,
            [
                "--config",
                str(write_yaml(tmp_path / "both.yaml", new.read_text() + "max_seq_length: 64\nmax_length: 64\n")),
            ],
        )
    with pytest.raises(ValueError, match="--bf16 and its old name --mixed_precision are both given"):
        parse_recipe_args(PRETRAIN_TYPES, ["--config", str(new), "--bf16", "true", "--mixed_precision", "bf16"])
    with pytest.raises(ValueError, match="mixed_precision must be auto, no, bf16 or fp16, got 'fp8'"):
        parse_recipe_args(PRETRAIN_TYPES, ["--config", str(new), "--mixed_precision", "fp8"])
    with pytest.raises(ValueError, match="set at most one of bf16 and fp16"):
        parse_recipe_args(PRETRAIN_TYPES, ["--config", str(new), "--bf16", "true", "--fp16", "true"])


def test_sft_takes_the_trl_names_and_the_old_ones(tmp_path, caplog):
    from modeling_shishu.training.sft import parse_args

    old = write_yaml(
        tmp_path / "old.yaml",
        "model_name_or_path: m\noutput_dir: out\ndataset_config_name: all\nmax_seq_length: 256\nwarmup_ratio: 0.1\n"
        "resume: true\nreport_to: none\n",
    )
    script_args, training_args, _ = parse_args(["--config", str(old)])
    assert (script_args.dataset_config, training_args.max_length, training_args.warmup_steps) == ("all", 256, 0.1)
    assert len([r for r in caplog.records if "deprecated" in r.getMessage()]) == 4


def test_warmup_steps_counts_steps_or_a_fraction_of_them():
    # TrainingArguments.get_warmup_steps: whole steps from 1 up, the ceiling of a fraction below 1.
    assert TrainArguments(output_dir="x", warmup_steps=10).num_warmup_steps(100) == 10
    assert TrainArguments(output_dir="x", warmup_steps=0.05).num_warmup_steps(30) == 2
    assert TrainArguments(output_dir="x").num_warmup_steps(30) == 0
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        TrainArguments(output_dir="x", warmup_steps=-1)


def test_bf16_unset_is_auto_and_false_leaves_it_to_the_launch(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.delenv("SHISHU_PRECISION", raising=False)  # the machine's own answer
    expected_auto = "bf16" if has_native_bf16(default_device()) else "no"
    assert resolve_mixed_precision(None) == expected_auto
    assert resolve_mixed_precision(None, device="cpu") == ("bf16" if cpu_has_native_bf16() else "no")
    monkeypatch.setenv("SHISHU_PRECISION", "float32")
    assert resolve_mixed_precision(None) == "no"  # the documented override, e.g. to time the float32 path
    monkeypatch.delenv("SHISHU_PRECISION")
    assert (resolve_mixed_precision(True), resolve_mixed_precision(False), resolve_mixed_precision(None, True)) == (
        "bf16",
        "no",
        "fp16",
    )
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert resolve_mixed_precision(None) is None and resolve_mixed_precision(False) is None  # accelerate's setting
    assert resolve_mixed_precision(True) == "bf16"


@pytest.mark.parametrize("recipe", sorted(p.relative_to(RECIPES) for p in RECIPES.glob("*/*/config*.yaml")))
def test_every_recipe_file_parses(recipe, caplog):
    stage = recipe.parts[1]
    argv = ["--config", str(RECIPES / recipe)]
    if stage == "pretrain":
        parsed = parse_recipe_args(PRETRAIN_TYPES, argv)
    elif stage == "distill":
        parsed = parse_recipe_args(DISTILL_TYPES, argv)
    else:
        from modeling_shishu.training.sft import parse_args

        parsed = parse_args(argv)
    assert any(getattr(p, "output_dir", None) for p in parsed)
    assert not [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]  # recipes use the new names
    assert (RECIPES / recipe.parts[0] / "README.md").is_file(), f"recipe variant {recipe.parts[0]} has no README"


# ---------------------------------------------------------------------------------- accelerate configs


def _launch_args(name):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    parsed = launch_command_parser().parse_args(
        ["--config_file", str(RECIPES / "accelerate_configs" / f"{name}.yaml"), "x.py"]
    )
    args, defaults, _ = _validate_launch_command(parsed)
    return args, defaults


def _known_launch_options() -> set:
    from accelerate.commands.launch import launch_command_parser

    return {action.dest for action in launch_command_parser()._actions}


def test_cpu_ddp_config_starts_two_cpu_processes():
    args, defaults = _launch_args("cpu_ddp")
    assert defaults.distributed_type == "MULTI_GPU" and defaults.use_cpu is True
    assert args.num_processes == 2 and args.multi_gpu
    assert _launch_args("ddp")[0].num_processes >= 2


def test_fsdp_config_wraps_a_share_group_as_one_unit(monkeypatch):
    """YAML -> the environment `accelerate launch` sets -> accelerate's FSDP plugin and FSDP2 wrap policy."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, defaults = _launch_args("fsdp")
    assert set(defaults.fsdp_config) <= _known_launch_options(), "unknown key in fsdp.yaml"
    for key, value in prepare_multi_gpu_env(args).items():
        if key.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2

    config = ShishuConfig(
        **tiny_config_kwargs(layer_types=["full_attention"] * 3 + ["mlp"] * 3, mlp_share_groups=[[3, 4]])
    )
    model = ShishuForCausalLM(config)
    plugin.set_auto_wrap_policy(model)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    units = [name for name, module in model.named_modules() if policy(module)]
    # Three decoder blocks, the owner of the shared pair (one unit, run twice) and the unshared MLP block;
    # layer 4 holds no weights and is not a unit.
    assert units == ["model.layers.0", "model.layers.1", "model.layers.2", "model.layers.3", "model.layers.5"]
    shared_unit = dict(model.named_modules())["model.layers.3"]
    assert {n for n, _ in shared_unit.named_parameters()} == {
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
        "post_attention_layernorm.weight",
    }


def test_zero3_config_is_a_valid_deepspeed_zero3_config(monkeypatch):
    """deepspeed cannot run here (GPU-only); accelerate's own launcher turns the file into the DeepSpeed config."""
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults = _launch_args("zero3")
    assert defaults.distributed_type == "DEEPSPEED" and args.use_deepspeed
    assert set(defaults.deepspeed_config) <= _known_launch_options(), "unknown key in zero3.yaml"
    args.deepspeed_fields_from_accelerate_config = ",".join([*defaults.deepspeed_config, "mixed_precision"])
    _, env = prepare_deepspeed_cmd_env(args)
    for key, value in env.items():
        if key.startswith("ACCELERATE_DEEPSPEED") or key == "ACCELERATE_MIXED_PRECISION":
            monkeypatch.setenv(key, value)
    zero = DeepSpeedPlugin().deepspeed_config["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # final model saved whole, in 16 bit
    assert zero["offload_param"]["device"] == "none" and zero["offload_optimizer"]["device"] == "none"


# ----------------------------------------------------------------------------------- FLOPs, schedule


def test_flops_per_token_counts_applied_weights_and_attention_layers_only():
    attention_only = ShishuConfig(**tiny_config_kwargs())
    model = ShishuForCausalLM(attention_only)
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if "norm" not in n and "embed" not in n)
    lm_head = attention_only.hidden_size * attention_only.vocab_size
    assert attention_only.tie_word_embeddings  # so lm_head is not among the named parameters
    assert applied_parameters(attention_only) == non_embedding + lm_head
    seq = 64
    palm = (
        6 * applied_parameters(attention_only)
        + 12 * 6 * attention_only.num_attention_heads * attention_only.head_dim * seq
    )
    assert flops_per_token(attention_only, seq) == palm

    layer_types = ["full_attention"] * 4 + ["mlp"] * 2
    unshared = ShishuConfig(**tiny_config_kwargs(layer_types=layer_types))
    shared = ShishuConfig(**tiny_config_kwargs(layer_types=layer_types, mlp_share_groups=[[4, 5]]))
    # A shared pair runs its MLP twice: same FLOPs as unshared, fewer stored parameters.
    assert flops_per_token(shared, seq) == flops_per_token(unshared, seq)
    assert ShishuForCausalLM(shared).num_parameters() < ShishuForCausalLM(unshared).num_parameters()
    # A plain Llama config (no layer_types) counts as the all-attention ShishuLM it equals.
    from transformers import LlamaConfig

    assert flops_per_token(LlamaConfig(**tiny_config_kwargs()), seq) == flops_per_token(attention_only, seq)
    # MLP-only layers drop both the attention weights and the attention-score term.
    attention_term = 12 * attention_only.num_attention_heads * attention_only.head_dim * seq
    c = attention_only
    projections = 2 * c.hidden_size * c.head_dim * (c.num_attention_heads + c.num_key_value_heads)  # q,o + k,v
    assert flops_per_token(attention_only, seq) - flops_per_token(unshared, seq) == 2 * (
        6 * projections + attention_term
    )


def test_warmup_then_cosine_to_the_floor():
    lr = [learning_rate_multiplier(s, 100, 10, "cosine", 0.1) for s in range(100)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lr[9:], lr[10:]))
    assert learning_rate_multiplier(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert learning_rate_multiplier(55, 100, 10, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert learning_rate_multiplier(55, 100, 10, "constant", 0.1) == 1.0


# --------------------------------------------------------------------------------------- data order


@pytest.fixture(scope="module")
def tokenizer():
    from modeling_shishu.training.runner import load_tokenizer

    return load_tokenizer("smollm2-135m")


def _documents(texts):
    import datasets

    return datasets.Dataset.from_dict({"text": texts})


def test_packing_joins_documents_with_eos_and_drops_the_tail(tokenizer):
    texts = ["To be, or not to be.", "That is the question.", "Whether 'tis nobler in the mind to suffer"]
    stream = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    blocks = PackedBlocks.from_documents(_documents(texts), tokenizer, "text", block_size=4)
    assert blocks.num_tokens == len(stream)
    assert blocks.blocks.flatten().tolist() == stream[: len(stream) // 4 * 4]
    limited = PackedBlocks.from_documents(_documents(texts * 50), tokenizer, "text", 4, max_blocks=3)
    assert len(limited) == 3 and limited.num_tokens < len(stream) * 50  # stopped reading early
    with pytest.raises(ValueError, match="is empty"):
        PackedBlocks.from_documents(_documents(["", ""]), tokenizer, "text", 4)
    with pytest.raises(ValueError, match="too small: 2 tokens do not fill one block of max_length=4"):
        PackedBlocks.from_documents(_documents(["Hi"]), tokenizer, "text", 4)


def test_the_offline_corpus_loads_without_the_datasets_package():
    """GPU images often lack `datasets`: the offline corpus (not streamed) is a plain list of rows."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['datasets'] = None\n"  # any `import datasets` now fails
        "from modeling_shishu.training.arguments import DataArguments\n"
        "from modeling_shishu.training.data import load_documents\n"
        "rows = load_documents(DataArguments(dataset_name='shakespeare'), 'validation')\n"
        "assert len(rows) == 2 and all(len(row['text']) > 10000 for row in rows), [len(r['text']) for r in rows]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_data_order_is_a_function_of_the_step():
    data = PackedBlocks(torch.arange(40).view(10, 4), 40)
    ranks = [ShuffledBatches(data, 2, 1, 2, rank, seed=3) for rank in range(2)]
    # One epoch (10 blocks = 2.5 steps of 4): every block exactly once, ranks disjoint.
    first_epoch = [i for step in range(2) for r in ranks for i in r.sample_indices(step, 0)] + ranks[0].sample_indices(
        2, 0
    )
    assert sorted(first_epoch) == list(range(10))
    # A fresh object (a resumed run) gives the same batches for any step, across epoch boundaries.
    again = ShuffledBatches(data, 2, 1, 2, 1, seed=3)
    for step in (7, 2, 5):
        assert again.sample_indices(step, 0) == ranks[1].sample_indices(step, 0)
    other_seed = ShuffledBatches(data, 10, 1, 1, 0, seed=4)
    assert other_seed.sample_indices(0, 0) != ShuffledBatches(data, 10, 1, 1, 0, seed=3).sample_indices(0, 0)
    with pytest.raises(ValueError, match="training data is too small: 10 blocks"):
        ShuffledBatches(data, 8, 1, 2, 0, seed=0)


def test_streaming_batches_replay_to_the_same_position(tokenizer):
    documents = _documents([f"document {i} " * (i + 1) for i in range(30)]).to_iterable_dataset()
    make = lambda: StreamingBatches(documents, tokenizer, "text", 8, 2, 1, 1, 0, seed=0, shuffle_buffer_size=5)  # noqa: E731
    straight = make()
    batches = [straight.micro_batches(step)[0] for step in range(6)]
    resumed = make()
    resumed.start_at(4)
    assert torch.equal(resumed.micro_batches(4)[0], batches[4])
    with pytest.raises(RuntimeError, match="in order"):
        resumed.micro_batches(9)


def test_eval_batches_give_every_rank_the_same_count_and_weight_each_block_once():
    data = PackedBlocks(torch.arange(20).view(5, 4), 20)
    seen, counts = [], []
    for rank in range(2):
        batches = list(eval_batches(data, 2, 2, rank))
        counts.append(len(batches))
        for blocks, weights in batches:
            seen += [int(b[0]) // 4 for b, w in zip(blocks, weights) if w > 0]
    assert counts[0] == counts[1]
    assert sorted(seen) == list(range(5))


# -------------------------------------------------------------------------------------- run folders


def test_run_directory_refuses_other_runs(tmp_path):
    out = tmp_path / "run"
    first = RunDirectory(out, "pretrain", {"learning_rate": 0.001, "seed": 1})
    first.check()
    first.claim(overwrite=False)
    assert json.loads((out / "run.json").read_text())["fingerprint"] == first.fingerprint

    same = RunDirectory(out, "pretrain", {"learning_rate": 0.001, "seed": 1})
    same.check()  # the same run continues in its folder
    assert same.checkpoint_to_resume() is None  # no checkpoint yet: from step 0
    with pytest.raises(FileNotFoundError, match="holds no complete checkpoint"):
        same.checkpoint_to_resume(True)
    (out / "checkpoint-4").mkdir()
    (out / "checkpoint-4" / "trainer_state.json").write_text(
        json.dumps({"stage": "pretrain", "fingerprint": same.fingerprint})
    )
    for name in ("model.safetensors", "optimizer.safetensors"):  # only a loadable checkpoint is resumed from
        save_file({"weight": torch.zeros(2)}, str(out / "checkpoint-4" / name))
    assert same.checkpoint_to_resume() == same.checkpoint_to_resume(True) == out / "checkpoint-4"
    with pytest.raises(ValueError, match="starts the run over: drop it, or resume_from_checkpoint"):
        same.checkpoint_to_resume(out / "checkpoint-4", overwrite=True)

    other = RunDirectory(out, "pretrain", {"learning_rate": 0.0003, "seed": 1})
    with pytest.raises(FileExistsError, match=r"different run \(learning_rate: 0.001 there, 0.0003 now\)"):
        other.check()
    with pytest.raises(FileExistsError, match="checkpoint-4 belongs to a different run"):
        other.checkpoint_to_resume(out / "checkpoint-4")
    with pytest.raises(FileExistsError, match="a 'pretrain' run, this is 'distill'"):
        RunDirectory(out, "distill", {}).check()
    other.check(overwrite=True)
    other.claim(overwrite=True)
    assert json.loads((out / "run.json").read_text())["fingerprint"] == other.fingerprint

    stranger = tmp_path / "not-a-run"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no run.json"):
        RunDirectory(stranger, "pretrain", {}).check()


def test_claim_on_all_ranks_waits_for_every_check_before_and_after_the_claim(tmp_path):
    run = RunDirectory(tmp_path / "run", "pretrain", {"seed": 1})
    events = []

    def wait_for_everyone():
        events.append(("barrier", (run.path / "run.json").exists()))

    run.claim_on_all_ranks(False, is_main_process=True, wait_for_everyone=wait_for_everyone)
    assert events == [("barrier", False), ("barrier", True)]  # nobody sees run.json before the first barrier
    events.clear()
    other_rank = RunDirectory(tmp_path / "other", "pretrain", {"seed": 1})
    other_rank.claim_on_all_ranks(False, is_main_process=False, wait_for_everyone=wait_for_everyone)
    assert len(events) == 2 and not other_rank.path.exists()  # only the main process writes


def test_checkpoints_only_count_when_complete_and_rotate(tmp_path):
    run = RunDirectory(tmp_path, "pretrain", {})
    for step in (5, 10, 15):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-20").mkdir()  # no trainer_state.json: not complete
    (tmp_path / ".checkpoint-25.tmp-abc").mkdir()  # staging folder of a killed save
    assert run.latest_checkpoint() == tmp_path / "checkpoint-15"
    run.rotate(2)
    assert [step for step, _ in run.checkpoints()] == [10, 15]
    run.remove_stale_temporaries()
    assert not (tmp_path / ".checkpoint-25.tmp-abc").exists()


def test_optimizer_state_round_trips_through_safetensors(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    from modeling_shishu.training.checkpointing import full_optimizer_state_dict

    state = full_optimizer_state_dict(model, optimizer)
    save_optimizer_state(state, tmp_path / "optimizer.safetensors")
    loaded = load_optimizer_state(tmp_path / "optimizer.safetensors")
    assert loaded["param_groups"][0]["betas"] == (0.8, 0.9)
    for name, entries in state["state"].items():
        for key, value in entries.items():
            assert torch.equal(loaded["state"][name][key], value)


def test_metrics_plot_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n{"step": 2, "eval_loss": 2.7}\n{"step": 3, "lo'
    )
    records = read_metrics(path)
    assert [r["step"] for r in records] == [1, 2, 2]
    plot_loss_curve(records, tmp_path / "loss.png", title="t")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(name.startswith(".") for name in os.listdir(tmp_path))
    assert math.isfinite(records[-1]["eval_loss"])


def test_peak_flops_lookup_for_mfu():
    from modeling_shishu.training.metrics import detect_peak_flops, peak_flops

    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12 and peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA L40S") == 362e12 and peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("NVIDIA H200") == 989e12 and peak_flops("NVIDIA H100 NVL") == 835e12
    assert peak_flops("Some Future Accelerator") is None
    assert detect_peak_flops(123e12) == 123e12
    if not torch.cuda.is_available():
        assert detect_peak_flops() is None  # no MFU on a CPU


def test_dataset_mixture_takes_a_seeded_fraction_of_each_offline_corpus():
    from modeling_shishu import assets
    from modeling_shishu.training.arguments import DataArguments
    from modeling_shishu.training.data import load_documents

    data_args = DataArguments(dataset_name=None, dataset_mixture="sharegpt=0.1,shakespeare=1.0")
    assert data_args.dataset_mixture == {"sharegpt": 0.1, "shakespeare": 1.0}
    rows = load_documents(data_args, "validation")
    conversations, plays = assets.sharegpt_texts("validation"), assets.shakespeare_texts("validation")
    texts = [row["text"] for row in rows]
    assert len(texts) == round(0.1 * len(conversations)) + len(plays)
    assert all(play in texts for play in plays) and set(texts) - set(plays) <= set(conversations)
    assert texts == [row["text"] for row in load_documents(data_args, "validation")]  # the same subset, same order
    assert texts[: len(plays)] != plays  # corpora are shuffled together, not concatenated
    with pytest.raises(ValueError, match="the fraction of 'sharegpt' must be in \\(0, 1\\]"):
        DataArguments(dataset_mixture={"sharegpt": 1.5})
    with pytest.raises(ValueError, match="the sharegpt corpus has splits train, validation, test, not 'dev'"):
        load_documents(DataArguments(dataset_name="sharegpt"), "dev")
