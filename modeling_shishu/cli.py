"""The `shishu` command: one subcommand per tool, each living in its own module.

A subcommand module defines `add_arguments(parser)` and `run(args) -> int | None`. Modules are imported
only when their subcommand runs, so `shishu --help` stays fast and a missing optional dependency
(lm-eval, matplotlib, ...) only affects the subcommand that needs it.
"""

import argparse
import importlib
import sys


# subcommand -> (module, one-line help)
COMMANDS = {
    "fetch-parent": (
        "modeling_shishu.assets.cli",
        "fetch and cache a parent checkpoint (offline default: smollm2-135m)",
    ),
    "variants": ("modeling_shishu.conversion.variants", "list the named ShishuLM variants"),
    "analyze": (
        "modeling_shishu.conversion.analysis",
        "per-layer attention linearity / removal cost, and which layers to convert",
    ),
    "convert": ("modeling_shishu.conversion.convert", "turn a Llama-family checkpoint into a ShishuLM"),
    "export-llama": (
        "modeling_shishu.conversion.export_llama",
        "write a plain LlamaForCausalLM computing the same function",
    ),
    "export-gguf": (
        "modeling_shishu.conversion.export_gguf",
        "write a GGUF for llama.cpp whose MLP-only layers have no attention or KV cache",
    ),
    "export-nemotron-nas": (
        "modeling_shishu.conversion.export_nemotron_nas",
        "write a Nemotron-NAS (DeciLM) folder for vLLM / SGLang / MLX-LM / llama.cpp, MLP-only layers without KV cache",
    ),
    "eval": ("modeling_shishu.evaluation.cli", "run an lm-eval suite and write results.json"),
    "fidelity": (
        "modeling_shishu.evaluation.fidelity_cli",
        "a model against its parent on held-out chat: KL, top-1 agreement, bits/byte, greedy answers",
    ),
    "card": ("modeling_shishu.release.card", "render a model card (README.md + .eval_results) from results.json"),
    "push": ("modeling_shishu.release.push", "validate a checkpoint folder and upload it to the Hub"),
    "bench": (
        "modeling_shishu.bench.cli",
        "measure a ShishuLM against its baseline: memory, prefill, decode, training",
    ),
    "demo": ("modeling_shishu.demo", "the main job end to end on the offline defaults"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shishu", description="ShishuLM tools")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in COMMANDS:
        build_parser().error(f"unknown command {command!r}; choose from {', '.join(COMMANDS)}")
    args = build_parser(command).parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    from .io_utils import OutputError

    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return module.run(args) or 0
    except (ValueError, FileNotFoundError, FileExistsError, OutputError) as error:
        # Bad input: one clear line, not a traceback.
        print(f"shishu {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
