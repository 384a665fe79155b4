"""The demo's stage runner: caching by command, rebuild on change, failures leave no record.

The full demo runs the real 135M pipeline (about 15-20 minutes here), so CI checks its parts instead:
every stage command is tested in its own module's tests."""

import argparse
import json
import sys

import gguf
import pytest
from conftest import save_tiny_hybrid

from modeling_shishu.demo import VARIANT, Stage, add_arguments, build_stages
from modeling_shishu.demo.stages import llama_cpp_available
from modeling_shishu.precision import native_dtype_name


def write_stage(out, text: str, name: str = "write") -> Stage:
    target = out / "result"
    code = f"import pathlib; p = pathlib.Path({str(target)!r}); p.mkdir(); (p / 'x.txt').write_text({text!r})"
    return Stage(name, [sys.executable, "-c", code], target)


def test_stage_runs_once_then_is_cached(tmp_path):
    stage = write_stage(tmp_path, "one")
    assert not stage.is_cached(tmp_path)
    assert stage.run(tmp_path) is True
    assert (tmp_path / "result" / "x.txt").read_text() == "one"
    assert stage.is_cached(tmp_path)
    assert stage.run(tmp_path) is False  # cached: not run again (mkdir would fail)
    assert stage.run(tmp_path, force=True) is True  # forced: the stale output is removed, then rebuilt
    assert (tmp_path / "logs" / "write.log").exists()


def test_changed_command_rebuilds_the_output(tmp_path):
    write_stage(tmp_path, "one").run(tmp_path)
    changed = write_stage(tmp_path, "two")
    assert not changed.is_cached(tmp_path)
    changed.run(tmp_path)
    assert (tmp_path / "result" / "x.txt").read_text() == "two"


def test_failed_stage_raises_and_is_not_recorded(tmp_path):
    failing = Stage("fail", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], tmp_path / "nothing")
    with pytest.raises(RuntimeError, match="stage fail failed \\(exit 3\\)"):
        failing.run(tmp_path)
    assert not failing.record_path(tmp_path).exists()
    assert "boom" in (tmp_path / "logs" / "fail.log").read_text()


def test_demo_stages_are_the_documented_commands(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path)])
    stages = build_stages(args, tmp_path / "parent")
    assert [s.name for s in stages] == [
        "analyze",
        "convert-data-free",
        "convert",
        "heal",
        "evaluate",
        "fidelity",
        "evaluate-before-healing",
        "benchmark",
        "export-gguf",
        *(["quantize-gguf"] if llama_cpp_available() else []),  # only where llama-cpp-python is installed
    ]
    heal = stages[3]
    assert "-m modeling_shishu.training.distill" in " ".join(heal.command)
    assert heal.env["ACCELERATE_USE_CPU"] == "1"
    assert f"--student_name_or_path={stages[2].output}" in heal.command  # healing starts from the fitted model
    data_free, convert = stages[1].command, stages[2].command
    assert convert[convert.index("--mlp-layers") + 1] == "10" and "pairs" in convert
    assert convert[convert.index("--layers-from") + 1] == str(stages[0].output)  # the analysis picks the layers
    assert "--no-fit" in data_free and "--no-fit" not in convert
    assert [part for part in data_free if part != "--no-fit"][:-3] == convert[:-3]  # the same layout
    before = stages[6].command
    assert before[before.index("--model") + 1] == str(stages[2].output)
    assert before[before.index("--baseline") + 1] == str(stages[1].output)
    top = build_stages(parser.parse_args(["--out", str(tmp_path), "--layers", "top"]), tmp_path / "parent")
    assert "--layers-from" not in top[2].command


def test_demo_heal_overrides_parse_with_the_current_field_names(tmp_path, caplog):
    from modeling_shishu.training.arguments import DataArguments, DistillArguments, TrainArguments, parse_recipe_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    heal = build_stages(parser.parse_args(["--out", str(tmp_path)]), tmp_path / "parent")[3]
    script = heal.command.index("modeling_shishu.training.distill")
    _, data_args, train_args = parse_recipe_args(
        (DistillArguments, DataArguments, TrainArguments), heal.command[script + 1 :]
    )
    # bf16 autocast exactly where the CPU computes bf16 natively
    assert train_args.bf16 is (native_dtype_name("cpu") == "bfloat16")
    assert 0 < train_args.warmup_steps < 1 and data_args.max_length > 0
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]


def test_demo_heal_recipe_mirrors_the_repository_recipe():
    """The package ships the demo's healing settings (an installed wheel has no recipes/ folder); they are the
    user-facing recipe's, field for field."""
    from pathlib import Path

    import yaml

    from modeling_shishu.demo import HEAL_RECIPE

    recipe = Path(__file__).resolve().parents[1] / "recipes" / VARIANT / "distill" / "config.yaml"
    assert yaml.safe_load(HEAL_RECIPE.read_text()) == yaml.safe_load(recipe.read_text())


def test_demo_commands_name_no_repository_files(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for stage in build_stages(parser.parse_args(["--out", str(tmp_path)]), tmp_path / "parent"):
        assert "recipes/" not in stage.printable(), stage.name


def test_demo_scores_the_tasks_the_parent_can_do_with_enough_documents(tmp_path):
    """The demo's evaluation command, parsed by `shishu eval`'s own parser: the demo's tasks with their document
    counts (none above what the task has, >= 250 each), the held-out bits per byte, two processes sharing them."""
    from modeling_shishu import evaluation
    from modeling_shishu.demo.pipeline import DEMO_TASKS

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    (evaluate,) = [
        s
        for s in build_stages(parser.parse_args(["--out", str(tmp_path)]), tmp_path / "parent")
        if s.name == "evaluate"
    ]
    eval_parser = argparse.ArgumentParser()
    evaluation.add_arguments(eval_parser)
    settings = eval_parser.parse_args(evaluate.command[evaluate.command.index("eval") + 1 :])
    assert settings.tasks.split(",") == [*DEMO_TASKS, "offline_shakespeare", "offline_sharegpt"]
    assert settings.dtype == "native"  # the precision the CPU computes natively, recorded in results.json
    suite = evaluation.load_suite(settings.suite)
    manifest = json.loads((evaluation.materialize_offline_tasks(suite.task_templates) / "manifest.json").read_text())
    limits = dict(settings.task_limit)
    for task, count in DEMO_TASKS.items():
        (available,) = [entry["rows"] for entry in manifest["tasks"][task]["data"].values()]
        assert limits[task] == count and 250 <= count <= available, task
    assert "--multi_gpu --num_processes 2" in " ".join(evaluate.command)
    assert evaluate.env == {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def test_final_table_opens_with_the_share_retained_of_the_headline_tasks():
    """The rows the demo (and the card, and `shishu eval`) open with, from `shishu eval`'s own comparison code: the
    tasks the parent does well above chance with model / parent and its paired SE, their mean, then bits/byte."""
    from modeling_shishu import evaluation
    from modeling_shishu.evaluation.tables import retained_rows

    def score(acc, z):  # one task's record as `shishu eval` stores it
        value, stderr = evaluation.mean_and_stderr(acc)
        return {
            "metric": "acc",
            "value": value,
            "stderr": stderr,
            "n_samples": len(acc),
            "chance": 0.5,
            "z_above_chance": z,
            "documents": {"doc_id": list(range(len(acc))), "acc": acc},
        }

    parent = {"a": [1.0] * 40 + [0.0] * 10, "b": [1.0, 0.0] * 25}
    shishu = {"a": [1.0] * 20 + [0.0] * 30, "b": [1.0, 0.0] * 24 + [0.0, 1.0]}
    z = {"p": {"a": 5.3, "b": 0.0}, "m": {"a": -1.0, "b": 0.0}}  # b: the parent is at chance
    results = {
        "tasks": {
            t: {
                "metric": "acc",
                "filter": "none",
                "num_fewshot": 0,
                "higher_is_better": True,
                "pretty_name": t.upper(),
            }
            for t in "ab"
        },
        "models": [
            {"label": label, "role": role, "scores": {t: score(acc[t], z[label][t]) for t in "ab"}}
            for label, role, acc in [("m", "model", shishu), ("p", "baseline", parent)]
        ],
    }
    results["comparison"] = evaluation.compare(results)
    a, mean = retained_rows(results)
    # a: 0.4 / 0.8 = 50%; d_i = m_i - 0.5 p_i: 0.5 on 20 docs, -0.5 on 20, 0 on 10 -> sd 0.4518 / sqrt(50) / 0.8
    assert (a["label"], a["n"], a["retained"]) == ("A", 50, 0.5)
    assert a["retained_stderr"] == pytest.approx(0.4518 / 50**0.5 / 0.8, abs=1e-4)
    assert mean["task"] is None and mean["retained"] == 0.5 and mean["retained_stderr"] == a["retained_stderr"]


def test_export_gguf_stage_writes_the_healed_model_next_to_the_release_folder(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    stages = build_stages(parser.parse_args(["--out", str(tmp_path)]), tmp_path / "parent")
    stage = next(s for s in stages if s.name == "export-gguf")
    out = tmp_path.resolve()
    assert stage.output == out / f"{VARIANT}.gguf"  # beside the release folder, out / VARIANT
    healed = out / "heal" / "final"
    assert stage.command[stage.command.index("export-gguf") + 1] == str(healed)
    save_tiny_hybrid(healed)  # a small ShishuLM in the healed model's place
    assert stage.run(out) is True
    reader = gguf.GGUFReader(stage.output)
    assert reader.get_field("general.name").contents() == VARIANT
    assert reader.get_field("general.file_type").contents() == gguf.LlamaFileType.MOSTLY_F16
    assert reader.get_field("deci.attention.head_count_kv").contents() == [2, 2, 0, 0, 2, 0]
    assert stage.run(out) is False  # cached: the same command does not run twice
