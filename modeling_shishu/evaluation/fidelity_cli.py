"""`shishu fidelity`: a model against its parent on held-out chat, token by token, and both greedy side by side.

    shishu fidelity --model DIR --parent smollm2-135m --out DIR [--conversations 32] [--max-length 1024]

Writes `fidelity.json` (assistant-turn bits per byte of both models, share retained, KL(parent || model) per
token, top-1 agreement, each with its paired standard error; the greedy answers to a few fixed chat prompts)
and `fidelity.md`, all at once when the run completes. The conversations are the held-out ("test") ShareGPT
conversations of the offline corpus, rendered in the parent's chat template.
"""

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

from ..io_utils import atomic_directory, atomic_write_json, atomic_write_text, claim_output, read_json_file
from ..loading import add_trust_remote_code_argument, remote_code_consent, resolve_checkpoint
from ..precision import default_device, native_dtype_name


FIDELITY_FORMAT = "shishu-fidelity"


def read_fidelity(path: str | os.PathLike) -> dict:
    """Read and check a fidelity.json written by `shishu fidelity`; `ValueError` names what is wrong."""
    report = read_json_file(path, "fidelity report")
    if not isinstance(report, dict) or report.get("format") != FIDELITY_FORMAT:
        raise ValueError(f'{path} is not a `shishu fidelity` report (no "format": "{FIDELITY_FORMAT}")')
    for key in ("measures", "model", "parent", "settings", "greedy"):
        if key not in report:
            raise ValueError(f"fidelity report {path} is missing {key}")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR|HUB_ID", help="the converted model")
    parser.add_argument(
        "--parent", required=True, metavar="DIR|HUB_ID", help="its parent: a folder, Hub id or offline parent name"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (written when the run completes)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    parser.add_argument("--name", help="label of --model (default: its folder name)")
    parser.add_argument("--parent-name", help="label of --parent (default: its name)")
    parser.add_argument("--conversations", type=int, default=32, help="held-out conversations to score (default: 32)")
    parser.add_argument(
        "--max-length", type=int, default=1024, help="tokens per conversation, the rest is cut (default: 1024)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=48, help="length of the greedy answers (default: 48; 0: none)"
    )
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype",
        default="native",
        choices=("native", "float32", "bfloat16"),
        help="native: bfloat16 where the device computes it natively, else float32 (default)",
    )
    add_trust_remote_code_argument(parser)


def _load(name: str, dtype: str, device: str, trust_remote_code: bool):
    import torch
    from transformers import AutoModelForCausalLM

    with remote_code_consent(name):
        model = AutoModelForCausalLM.from_pretrained(
            resolve_checkpoint(name, trust_remote_code),
            dtype=getattr(torch, dtype),
            trust_remote_code=trust_remote_code,
        )
    return model.to(device).eval()


def _label(name: str, given: str | None) -> str:
    return given or Path(name).name or name


def _cell(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render_markdown(report: dict) -> str:
    """The measures as a table, then the greedy answers side by side."""
    m = report["measures"]
    model, parent = report["model"]["label"], report["parent"]["label"]
    lines = [
        f"Held-out chat: {m['conversations']} ShareGPT conversations, {m['tokens']:,} assistant tokens "
        f"({m['bytes']:,} bytes), {report['settings']['dtype']}.",
        "",
        "| measure | value | paired SE |",
        "| --- | ---: | ---: |",
        f"| assistant bits/byte, {parent} | {_cell(m['parent_bits_per_byte'], '.4f')} | {_cell(m['parent_bits_per_byte_stderr'], '.4f')} |",
        f"| assistant bits/byte, {model} | {_cell(m['model_bits_per_byte'], '.4f')} | {_cell(m['model_bits_per_byte_stderr'], '.4f')} |",
        f"| retained (parent / model bits/byte) | {_cell(m['retained'], '.2%')} | {_cell(m['retained_stderr'], '.2%')} |",
        f"| KL(parent ‖ model), nats/token | {_cell(m['kl_per_token'], '.4f')} | {_cell(m['kl_per_token_stderr'], '.4f')} |",
        f"| top-1 agreement with the parent | {_cell(m['top1_agreement'], '.2%')} | {_cell(m['top1_agreement_stderr'], '.2%')} |",
    ]
    if report["greedy"]:
        lines += ["", f"| prompt | {parent} (greedy) | {model} (greedy) |", "| --- | --- | --- |"]
        for row in report["greedy"]:
            cells = [
                " ".join(str(cell).split()).replace("|", "\\|")
                for cell in (row["prompt"], row["parent"], row["model"])
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.conversations < 1 or args.max_length < 16 or args.max_new_tokens < 0:
        raise ValueError("--conversations must be >= 1, --max-length >= 16 and --max-new-tokens >= 0")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    with claim_output(out, overwrite=args.overwrite):
        return _measure_and_write(args, out)


def _measure_and_write(args: argparse.Namespace, out: Path) -> int:
    import torch
    from transformers import AutoTokenizer

    from .. import assets
    from .fidelity import CHAT_PROMPTS, chat_fidelity, greedy_answers

    started = datetime.datetime.now(datetime.timezone.utc)
    wall = time.perf_counter()
    device = args.device or default_device()
    dtype = native_dtype_name(device) if args.dtype == "native" else args.dtype
    parent_path = resolve_checkpoint(args.parent, args.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(parent_path)
    if tokenizer.chat_template is None:
        raise ValueError(f"the parent's tokenizer ({args.parent}) has no chat template to render conversations with")
    parent = _load(args.parent, dtype, device, args.trust_remote_code)
    model = _load(args.model, dtype, device, args.trust_remote_code)
    if model.config.vocab_size != parent.config.vocab_size:
        raise ValueError(
            f"{args.model} has a vocabulary of {model.config.vocab_size}, its parent {parent.config.vocab_size}"
        )
    conversations = assets.sharegpt_conversations("test", limit=None)[: args.conversations]
    torch.manual_seed(0)
    measures = chat_fidelity(model, parent, tokenizer, conversations, args.max_length)
    greedy = []
    if args.max_new_tokens:
        answers = zip(
            greedy_answers(parent, tokenizer, CHAT_PROMPTS, args.max_new_tokens),
            greedy_answers(model, tokenizer, CHAT_PROMPTS, args.max_new_tokens),
        )
        greedy = [{"prompt": p, "parent": a, "model": b} for p, (a, b) in zip(CHAT_PROMPTS, answers)]
    report = {
        "format": FIDELITY_FORMAT,
        "format_version": 1,
        "date": started.isoformat(timespec="seconds"),
        "model": {"label": _label(args.model, args.name), "pretrained": str(args.model)},
        "parent": {"label": _label(args.parent, args.parent_name), "pretrained": str(args.parent)},
        "data": {"corpus": "sharegpt", "split": "test", "chat_template": "the parent's"},
        "settings": {
            "conversations": args.conversations,
            "max_length": args.max_length,
            "max_new_tokens": args.max_new_tokens,
            "device": device,
            "dtype": dtype,
        },
        "measures": measures,
        "greedy": greedy,
        "wall_seconds": round(time.perf_counter() - wall, 1),
    }
    with atomic_directory(out, overwrite=args.overwrite) as tmp:
        atomic_write_json(tmp / "fidelity.json", report)
        atomic_write_text(tmp / "fidelity.md", render_markdown(report))
    print(render_markdown(report))
    print(f"wrote {out / 'fidelity.json'} in {report['wall_seconds']:.0f} s", file=sys.stderr)
    return 0
