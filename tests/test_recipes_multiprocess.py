"""Real multi-process runs on the CPU: every stage under `accelerate launch` with the two-process config
(DDP over gloo, world size 2, identical parameters on both ranks afterwards), and FSDP2 sharding with the
wrap policy of `recipes/accelerate_configs/fsdp.yaml` (accelerate refuses FSDP on a CPU, so that test
shards with torch's `fully_shard` under `torch.distributed.run`)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import free_port

from modeling_shishu.training.checkpointing import parameter_digest


pytestmark = pytest.mark.multiprocess

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
ACCELERATE = Path(sys.executable).with_name("accelerate")


def run(command: list[str]) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr[-4000:]}"
    return result


def accelerate_launch(stage: str, *args: str) -> subprocess.CompletedProcess:
    config = RECIPES / "accelerate_configs" / "cpu_ddp.yaml"
    script = RECIPES / "scripts" / f"{stage}.py"
    return run(
        [
            str(ACCELERATE),
            "launch",
            "--config_file",
            str(config),
            "--main_process_port",
            str(free_port()),
            str(script),
            *args,
        ]
    )


def assert_two_ranks_in_sync(out: Path, model_class=None):
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["world_size"] == 2
    digests = summary["parameter_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    if model_class is not None:
        # ... and the released folder holds exactly those parameters.
        assert parameter_digest(model_class.from_pretrained(out / "final")) == digests[0]
    return summary


@pytest.fixture(scope="module")
def tokenizer():
    from modeling_shishu.training.runner import load_tokenizer

    return load_tokenizer("smollm2-135m")


def test_pretrain_ddp_two_processes_and_resume(tmp_path):
    from modeling_shishu import ShishuForCausalLM
    from modeling_shishu.training.metrics import read_metrics

    out = tmp_path / "pretrain"
    args = [
        "--config",
        str(RECIPES / "shishu-tiny" / "pretrain" / "config.yaml"),
        "--output_dir",
        str(out),
        "--max_length",
        "64",
        "--per_device_train_batch_size",
        "2",
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "3",
        "--max_steps",
        "5",
        "--save_steps",
        "2",
        "--eval_steps",
        "5",
        "--logging_steps",
        "1",
        "--progress_bar",
        "false",
        "--gradient_checkpointing",
    ]
    accelerate_launch("pretrain", *args, "--stop_after_steps", "3")  # stops after step 3; last checkpoint: step 2
    stopped = {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r}
    assert sorted(stopped) == [1, 2, 3] and not (out / "final").exists()
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "rng_state_0.safetensors").is_file() and (checkpoint / "rng_state_1.safetensors").is_file()

    accelerate_launch("pretrain", *args)
    resumed = {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r}
    assert sorted(resumed) == [1, 2, 3, 4, 5]
    assert resumed[3] == pytest.approx(stopped[3], abs=1e-6)  # step 3 recomputed after the resume, same loss
    summary = assert_two_ranks_in_sync(out, ShishuForCausalLM)
    assert summary["tokens_per_step"] == 2 * 2 * 64  # two ranks x two blocks x 64 tokens


def test_distill_ddp_two_processes(tmp_path, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    from modeling_shishu import ShishuForCausalLM

    parent = tmp_path / "parent"
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(parent)
    tokenizer.save_pretrained(parent)
    out = tmp_path / "distill"
    accelerate_launch(
        "distill",
        "--config",
        str(RECIPES / "shishu-tiny" / "distill" / "config.yaml"),
        "--output_dir",
        str(out),
        "--teacher_name_or_path",
        str(parent),
        "--max_length",
        "64",
        "--per_device_train_batch_size",
        "2",
        "--max_train_samples",
        "32",
        "--max_eval_samples",
        "3",
        "--max_steps",
        "3",
        "--save_steps",
        "10",
        "--eval_steps",
        "3",
        "--logging_steps",
        "1",
        "--progress_bar",
        "false",
    )
    summary = assert_two_ranks_in_sync(out, ShishuForCausalLM)
    assert "eval_kl" in summary["final_eval"]


def test_sft_ddp_two_processes(tmp_path, tokenizer):
    from modeling_shishu import ShishuConfig, ShishuForCausalLM

    base = tmp_path / "base"
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
        eos_token_id=tokenizer.eos_token_id,
    )
    ShishuForCausalLM(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    out = tmp_path / "sft"
    accelerate_launch(
        "sft",
        "--config",
        str(RECIPES / "shishu-tiny" / "sft" / "config.yaml"),
        "--output_dir",
        str(out),
        "--model_name_or_path",
        str(base),
        "--use_peft",
        "false",
        "--max_train_samples",
        "16",
        "--num_eval_samples",
        "0",
        "--max_length",
        "96",
        "--per_device_train_batch_size",
        "2",
        "--max_steps",
        "3",
        "--save_steps",
        "10",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        "true",
    )
    assert_two_ranks_in_sync(out, ShishuForCausalLM)


FSDP_SCRIPT = textwrap.dedent(
    '''
    """FSDP2 on two CPU processes with the wrap policy accelerate derives from fsdp.yaml; compares a sharded
    run (and a resume from its checkpoint) with a single-process reference on the same batches."""
    import json, os, sys
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from safetensors.torch import save_file
    from torch.distributed.fsdp import fully_shard

    from modeling_shishu import ShishuConfig, ShishuForCausalLM
    from modeling_shishu.training.checkpointing import full_model_state_dict, full_optimizer_state_dict, restore_model_and_optimizer, save_optimizer_state

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(sys.argv[1])
    plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables accelerate launch sets for fsdp.yaml

    def build():
        torch.manual_seed(0)
        config = ShishuConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                              num_attention_heads=4, num_key_value_heads=2, layer_types=["full_attention"] * 3 + ["mlp"] * 3,
                              mlp_share_groups=[[3, 4]], tie_word_embeddings=True)
        return ShishuForCausalLM(config)

    def shard(model):
        plugin.set_auto_wrap_policy(model)
        policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
        units = [name for name, module in model.named_modules() if policy(module)]
        for name in reversed(units):
            fully_shard(model.get_submodule(name))
        fully_shard(model)
        return units

    def train_step(model, optimizer, batch, sharded=True):
        local = batch[rank * 2:(rank + 1) * 2] if sharded else batch
        loss = model(input_ids=local, labels=local, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss = loss.detach()
        if sharded:
            dist.all_reduce(loss)
            loss /= world
        return loss.item()

    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 99, (2 * world, 16), generator=generator) for _ in range(4)]
    model = build()
    units = shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = [train_step(model, optimizer, b) for b in batches[:3]]
    weights, optimizer_state = full_model_state_dict(model), full_optimizer_state_dict(model, optimizer)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v for k, v in weights.items() if k != "lm_head.weight"}, str(out / "model.safetensors"))
        save_optimizer_state(optimizer_state, out / "optimizer.safetensors")
    dist.barrier()

    resumed = build()
    shard(resumed)
    resumed_optimizer = torch.optim.AdamW(resumed.parameters(), lr=1e-2)
    restore_model_and_optimizer(out, resumed, resumed_optimizer, resumed.config)
    loss_after_resume = train_step(resumed, resumed_optimizer, batches[3])
    losses.append(train_step(model, optimizer, batches[3]))
    final = full_model_state_dict(model)
    final_resumed = full_model_state_dict(resumed)

    if rank == 0:
        reference = build()
        reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2)
        reference_losses = [train_step(reference, reference_optimizer, b, sharded=False) for b in batches]
        reference_weights = reference.state_dict()
        max_weight_difference = max((final[k] - reference_weights[k]).abs().max().item() for k in final)
        max_resume_difference = max((final[k] - final_resumed[k]).abs().max().item() for k in final)
        (out / "result.json").write_text(json.dumps({
            "units": units, "losses": losses, "reference_losses": reference_losses,
            "loss_after_resume": loss_after_resume, "max_weight_difference": max_weight_difference,
            "max_resume_difference": max_resume_difference,
        }))
    dist.destroy_process_group()
    '''
)


def test_fsdp2_shards_a_share_group_as_one_unit_and_resumes(tmp_path):
    """fsdp.yaml's wrap classes under real FSDP2 (gloo, two processes): same losses and weights as one
    process, and the checkpoint code (full state dicts, safetensors) restores a sharded model exactly."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    parsed = launch_command_parser().parse_args(
        ["--config_file", str(RECIPES / "accelerate_configs" / "fsdp.yaml"), "x.py"]
    )
    fsdp_env = {
        k: v for k, v in prepare_multi_gpu_env(_validate_launch_command(parsed)[0]).items() if k.startswith("FSDP_")
    }
    script = tmp_path / "fsdp_run.py"
    script.write_text(FSDP_SCRIPT)
    out = tmp_path / "fsdp"
    env_prefix = [f"{k}={v}" for k, v in fsdp_env.items()]
    run(
        [
            "env",
            *env_prefix,
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            str(script),
            str(out),
        ]
    )
    result = json.loads((out / "result.json").read_text())
    assert result["units"] == [
        "model.layers.0",
        "model.layers.1",
        "model.layers.2",
        "model.layers.3",
        "model.layers.5",
    ]
    assert result["losses"] == pytest.approx(result["reference_losses"], abs=1e-5)
    assert result["max_weight_difference"] < 1e-4  # four AdamW steps at lr 1e-2: float reduction order only
    assert result["loss_after_resume"] == pytest.approx(result["losses"][3], abs=1e-6)
    assert result["max_resume_difference"] < 1e-6
