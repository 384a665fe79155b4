"""Held-out bits per byte along a healing run, against minutes of training.

Evaluates the student before healing, every checkpoint of a distill run folder and its final model (`save_steps` sets how
many) on held-out Shakespeare and ShareGPT with `shishu eval`, then writes a JSON table and a plot:

    python recipes/scripts/healing_curve.py --run outputs/curve/heal --start outputs/demo/converted \
        --parent smollm2-135m --out docs/healing_curve

The x axis is the run's own optimizer-step time (`elapsed_seconds` in each checkpoint's trainer state),
so evaluation and checkpointing do not count, and a resumed run reads as one.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


TASKS = {"offline_shakespeare": "Shakespeare", "offline_sharegpt": "ShareGPT"}


def held_out_bits_per_byte(model: str, limit: int) -> dict[str, float]:
    """`shishu eval`'s bits per byte of `model` on each held-out corpus."""
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable,
            "-m",
            "modeling_shishu.cli",
            "eval",
            "--model",
            model,
            "--suite",
            "offline",
            "--tasks",
            ",".join(TASKS),
            "--limit",
            str(limit),
            "--dtype",
            "bfloat16",
            "--out",
            folder,
            "--overwrite",
        ]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        results = json.loads((Path(folder) / "results.json").read_text())
    scores = results["models"][0]["scores"]
    return {task: scores[task]["value"] for task in TASKS}


def curve_points(run: Path, start: str | None) -> list[tuple[int, float, str]]:
    """(step, training minutes, model folder) for the start, every checkpoint and the final model, in step order."""
    points = [(0, 0.0, start)] if start else []
    for checkpoint in sorted(run.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1])):
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        points.append((state["step"], state["elapsed_seconds"] / 60, str(checkpoint)))
    summary = run / "training_summary.json"  # the finished run's last step (its checkpoint may have been pruned)
    if summary.is_file() and (run / "final").is_dir():
        record = json.loads(summary.read_text())
        if not points or record["steps"] > points[-1][0]:
            points.append((record["steps"], record["train_seconds"] / 60, str(run / "final")))
    if len(points) < 2:
        raise SystemExit(
            f"healing_curve: {run} has no checkpoint-* or final folder to evaluate (set --save_steps in the distill run)"
        )
    return points


def plot(rows: list[dict], parent: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(TASKS), figsize=(10, 4), constrained_layout=True)
    for ax, (task, corpus) in zip(axes, TASKS.items()):
        ax.plot([r["minutes"] for r in rows], [r[task] for r in rows], marker="o", label="ShishuLM while healing")
        if parent:
            ax.axhline(parent[task], color="grey", linestyle="--", label="parent")
        ax.set(title=f"held-out {corpus}", xlabel="healing minutes (optimizer steps)", ylabel="bits per byte")
        ax.grid(alpha=0.3)
        ax.legend()
    figure.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run", required=True, type=Path, help="a distill run folder (output_dir) with checkpoint-* folders"
    )
    parser.add_argument("--start", help="the student before healing (plotted at minute 0)")
    parser.add_argument("--parent", help="the parent, drawn as a line (a folder, offline name or Hub id)")
    parser.add_argument(
        "--limit", type=int, default=12, help="held-out documents per corpus (default: 12, as the demo)"
    )
    parser.add_argument("--out", required=True, type=Path, help="writes OUT.json and OUT.png")
    args = parser.parse_args(argv)

    rows = []
    for step, minutes, model in curve_points(args.run, args.start):
        rows.append({"step": step, "minutes": round(minutes, 3), **held_out_bits_per_byte(model, args.limit)})
        print(json.dumps(rows[-1]), flush=True)
    parent = held_out_bits_per_byte(args.parent, args.limit) if args.parent else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"parent": parent, "points": rows}, indent=2) + "\n")
    plot(rows, parent, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
