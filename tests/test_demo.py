"""The demo's stage runner: caching by command, rebuild on change, failures leave no record.

The full demo runs the real 135M pipeline (about 15-20 minutes here), so CI checks its parts instead:
every stage command is tested in its own module's tests."""

import argparse
import sys

import gguf
import pytest

from modeling_shishu.demo import VARIANT, Stage, add_arguments, build_stages
from test_export_gguf import save_tiny_hybrid


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
        "analyze", "convert-data-free", "convert", "heal", "evaluate", "evaluate-before-healing", "benchmark",
        "export-gguf",
    ]
    heal = stages[3]
    assert "recipes/scripts/distill.py" in " ".join(heal.command)
    assert heal.env["ACCELERATE_USE_CPU"] == "1"
    assert f"--student_name_or_path={stages[2].output}" in heal.command  # healing starts from the fitted model
    data_free, convert = stages[1].command, stages[2].command
    assert convert[convert.index("--mlp-layers") + 1] == "10" and "pairs" in convert
    assert convert[convert.index("--layers-from") + 1] == str(stages[0].output)  # the analysis picks the layers
    assert "--no-fit" in data_free and "--no-fit" not in convert
    assert [part for part in data_free if part != "--no-fit"][:-3] == convert[:-3]  # the same layout
    before = stages[5].command
    assert before[before.index("--model") + 1] == str(stages[2].output)
    assert before[before.index("--baseline") + 1] == str(stages[1].output)
    top = build_stages(parser.parse_args(["--out", str(tmp_path), "--layers", "top"]), tmp_path / "parent")
    assert "--layers-from" not in top[2].command


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
