"""The named ShishuLM variants: which parent, which layers become MLP-only, how they share.

    shishu variants                 # the table: layers, unique parameters, KV-cache bytes per token
    shishu variants --markdown      # the same table for the README
    shishu convert --variant shishu-smollm2-135m-instruct-m10 --out shishu-m10

Sizes are computed, not typed in (`modeling_shishu.sizes.layout_sizes` on the parent's and the variant's
configs). The parent shapes below are the shape-defining fields of the parents' Hub `config.json`;
`tests/test_real_parent.py` checks the SmolLM2-135M entry against the real offline parent.
"""

import argparse
import dataclasses
import json
import os
from functools import cached_property

from transformers import AutoConfig

from ..configuration_shishu import ShishuConfig
from ..sizes import layout_sizes


# Shape-defining fields of the parents' Hub configs.
SMOLLM2_135M = dict(
    model_type="llama",
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    tie_word_embeddings=True,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)
SMOLLM2_360M = dict(
    SMOLLM2_135M,
    hidden_size=960,
    intermediate_size=2560,
    num_hidden_layers=32,
    num_attention_heads=15,
    num_key_value_heads=5,
)
QWEN2_0_5B = dict(
    model_type="qwen2",
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    tie_word_embeddings=True,
    max_position_embeddings=131072,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    use_sliding_window=False,
    bos_token_id=151643,
    eos_token_id=151643,
)


@dataclasses.dataclass(frozen=True)
class ShishuVariant:
    """One named ShishuLM layout on a named parent."""

    name: str
    # Hub id of the parent, the normal configuration wherever the Hub is reachable.
    parent_hub_id: str
    # Name of the offline parent in `assets.PARENTS` with the same architecture, or None.
    offline_parent: str | None
    # The top `num_mlp_layers` parent layers become MLP-only blocks (the paper's choice).
    num_mlp_layers: int
    # "pairs": adjacent MLP-only blocks share one set of weights; "none": every block has its own.
    share: str
    # MLP-only blocks appended on top, initialised as exact identities.
    extra_mlp_layers: int
    description: str
    # The parent's shape-defining config fields (see the module docstring).
    parent_architecture: dict = dataclasses.field(repr=False, compare=False)

    def default_parent(self) -> str:
        """The offline parent when the Hub is switched off (`HF_HUB_OFFLINE=1`) and one exists, else the Hub id."""
        if self.offline_parent is not None and os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            return self.offline_parent
        return self.parent_hub_id

    def parent_config(self):
        fields = dict(self.parent_architecture)
        return AutoConfig.for_model(fields.pop("model_type"), **fields)

    def shishu_config(self) -> ShishuConfig:
        return ShishuConfig.from_llama_config(
            self.parent_config(),
            num_mlp_layers=self.num_mlp_layers,
            share=self.share,
            extra_mlp_layers=self.extra_mlp_layers,
        )

    @cached_property
    def sizes(self) -> dict:
        """Unique parameters and bf16 KV-cache bytes per token, for the parent and the variant."""
        parent, shishu = self.parent_config(), self.shishu_config()
        return layout_sizes(parent, shishu)


def _variant(name, parent_hub_id, offline_parent, architecture, num_mlp_layers, description, share="pairs", extra=0):
    return ShishuVariant(
        name=name,
        parent_hub_id=parent_hub_id,
        offline_parent=offline_parent,
        num_mlp_layers=num_mlp_layers,
        share=share,
        extra_mlp_layers=extra,
        description=description,
        parent_architecture=architecture,
    )


_SMOL135 = "HuggingFaceTB/SmolLM2-135M-Instruct"
_SMOL360 = "HuggingFaceTB/SmolLM2-360M-Instruct"

VARIANTS: dict[str, ShishuVariant] = {
    v.name: v
    for v in [
        _variant(
            "shishu-smollm2-135m-instruct-m6",
            _SMOL135,
            "smollm2-135m",
            SMOLLM2_135M,
            6,
            "SmolLM2-135M, top 6 of 30 layers MLP-only, pairs shared: the gentle cut",
        ),
        _variant(
            "shishu-smollm2-135m-instruct-m10",
            _SMOL135,
            "smollm2-135m",
            SMOLLM2_135M,
            10,
            "SmolLM2-135M, top 10 of 30 layers MLP-only, pairs shared: the reference variant",
        ),
        _variant(
            "shishu-smollm2-135m-instruct-m10-x2",
            _SMOL135,
            "smollm2-135m",
            SMOLLM2_135M,
            10,
            "m10 plus 2 extra MLP-only layers (one more shared pair) to win back quality",
            extra=2,
        ),
        _variant(
            "shishu-smollm2-135m-instruct-m14",
            _SMOL135,
            "smollm2-135m",
            SMOLLM2_135M,
            14,
            "SmolLM2-135M, top 14 of 30 layers MLP-only, pairs shared: the aggressive cut",
        ),
        _variant(
            "shishu-smollm2-135m-instruct-m10-unshared",
            _SMOL135,
            "smollm2-135m",
            SMOLLM2_135M,
            10,
            "top 10 layers MLP-only without weight sharing: the ablation of pairing",
            share="none",
        ),
        _variant(
            "shishu-smollm2-360m-instruct-m10",
            _SMOL360,
            None,
            SMOLLM2_360M,
            10,
            "SmolLM2-360M, top 10 of 32 layers MLP-only, pairs shared",
        ),
        _variant(
            "shishu-qwen2-0.5b-m8",
            "Qwen/Qwen2-0.5B",
            None,
            QWEN2_0_5B,
            8,
            "Qwen2-0.5B (q/k/v bias), top 8 of 24 layers MLP-only, pairs shared",
        ),
    ]
}


def get_variant(name: str) -> ShishuVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; known variants: {', '.join(VARIANTS)}") from None


def variants_table(markdown: bool = False) -> str:
    headers = [
        "variant",
        "parent (Hub id)",
        "offline parent",
        "layers attn+mlp",
        "shared pairs",
        "unique params",
        "vs parent",
        "KV B/token (bf16)",
        "vs parent",
    ]
    rows = []
    for variant in VARIANTS.values():
        s = variant.sizes
        rows.append(
            [
                variant.name,
                variant.parent_hub_id,
                variant.offline_parent or "-",
                f"{s['attention_layers']}+{s['mlp_layers']}",
                str(s["share_groups"]),
                f"{s['parameters']:,}",
                f"{s['parameters_change']:+.2%}",
                f"{s['kv_bytes_per_token_bf16']:,}",
                f"{s['kv_change']:+.1%}",
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
        lines += [
            "| " + " | ".join(f"`{row[0]}`" if i == 0 else cell for i, cell in enumerate(row)) + " |" for row in rows
        ]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--markdown", action="store_true", help="print a markdown table (for the README)")
    output.add_argument("--json", action="store_true", help="print every variant with its sizes as JSON")


def run(args: argparse.Namespace) -> int:
    if args.json:
        records = []
        for variant in VARIANTS.values():
            record = {f.name: getattr(variant, f.name) for f in dataclasses.fields(variant)}
            record.update(variant.sizes)
            records.append(record)
        print(json.dumps(records, indent=2))
    else:
        print(variants_table(markdown=args.markdown))
    return 0


__all__ = ["VARIANTS", "ShishuVariant", "get_variant", "variants_table"]
