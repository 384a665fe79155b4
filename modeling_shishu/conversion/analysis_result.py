"""The result of a layer analysis: per-layer rows, the measured candidate sets, and the rule that recommends
which K layers lose their attention (rule and candidates: docs/model_family.md, "Layer analysis")."""

import dataclasses
import math

from ..configuration_shishu import ATTENTION_LAYER, MLP_LAYER, pair_adjacent_mlp_layers


@dataclasses.dataclass
class LayerRow:
    layer: int
    # ATTENTION_LAYER, or MLP_LAYER for a ShishuLM MLP-only layer (no attention: no numbers)
    layer_type: str
    r2: float | None = None
    train_r2: float | None = None
    removal_cost: float | None = None
    cosine: float | None = None
    update_ratio: float | None = None


@dataclasses.dataclass
class Recommendation:
    k: int
    layers: list[int]
    rule: str
    description: str
    # Held-out loss increase with all `layers` dropped at once; None if not measured.
    joint_cost: float | None


@dataclasses.dataclass
class LayerAnalysis:
    """Per-layer rows plus the measured candidate sets; `recommend(k)` applies the documented rule."""

    model: str
    rows: list[LayerRow]
    # None when the removal costs were skipped (ablation_tokens=0)
    baseline_loss: float | None
    # k -> {"top": {"layers": [...], "joint_cost": float, "shared_pairs": int}, "lowest-cost": {...}}
    candidates: dict[int, dict[str, dict]]
    settings: dict
    timings: dict = dataclasses.field(default_factory=dict)

    @property
    def attention_rows(self) -> list[LayerRow]:
        return [row for row in self.rows if row.layer_type == ATTENTION_LAYER]

    def ranked_by_cost(self) -> list[int]:
        return [row.layer for row in sorted(self.attention_rows, key=lambda row: (row.removal_cost, -row.layer))]

    def candidate_sets(self, k: int) -> dict[str, list[int]]:
        """The candidate layer sets for K ("top", "lowest-cost-pairs", "lowest-cost"), from the single-layer
        costs."""
        costs = {row.layer: row.removal_cost for row in self.attention_rows}
        candidates = {"top": sorted(costs)[-k:]}
        paired = lowest_cost_pairs(costs, k)
        if paired is not None:
            candidates["lowest-cost-pairs"] = paired
        candidates["lowest-cost"] = sorted(self.ranked_by_cost()[:k])
        return candidates

    def shared_pairs(self, layers: list[int]) -> int:
        """How many shared pairs converting `layers` gives (adjacent MLP-only layers pair up)."""
        layer_types = [row.layer_type for row in self.rows]
        for layer in layers:
            layer_types[layer] = MLP_LAYER
        return len(pair_adjacent_mlp_layers(layer_types))

    def recommend(self, k: int) -> Recommendation:
        """Among the measured candidates that keep the most layers in shared pairs (so the converted model saves
        as much as the paper's layout), the lowest joint cost, "top" on ties. Without measured joint costs for
        `k`: "lowest-cost-pairs" from the single costs."""
        attention_layers = [row.layer for row in self.attention_rows]
        if not 0 < k <= len(attention_layers):
            raise ValueError(f"k must be between 1 and {len(attention_layers)} (the attention layers), got {k}")
        if self.baseline_loss is None:
            raise ValueError("this analysis has no removal costs (ablation_tokens was 0): nothing to recommend from")
        measured = self.candidates.get(k) or self.candidates.get(str(k))
        if not measured:
            name, layers = next((n, l) for n, l in self.candidate_sets(k).items() if n != "top")
            return Recommendation(
                k,
                layers,
                name,
                f"{name} set from single-layer removal costs (joint cost not measured for k={k}; "
                f"run the analysis with k={k} to compare candidates)",
                None,
            )
        most_pairs = max(c["shared_pairs"] for c in measured.values())
        eligible = [name for name, c in measured.items() if c["shared_pairs"] == most_pairs]
        best = min(eligible, key=lambda name: (measured[name]["joint_cost"], name != "top"))
        chosen = measured[best]
        return Recommendation(
            k, list(chosen["layers"]), best, _describe_choice(k, best, measured), chosen["joint_cost"]
        )

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["candidates"] = {str(k): v for k, v in self.candidates.items()}
        data["recommendations"] = {str(k): dataclasses.asdict(self.recommend(k)) for k in self.candidates}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "LayerAnalysis":
        rows = [LayerRow(**row) for row in data["rows"]]
        candidates = {int(k): v for k, v in data["candidates"].items()}
        return cls(data["model"], rows, data["baseline_loss"], candidates, data["settings"], data.get("timings", {}))

    def table(self) -> str:
        lines = [
            f"{self.model}: baseline held-out loss "
            + ("not measured " if self.baseline_loss is None else f"{self.baseline_loss:.4f} ")
            + f"(context {self.settings['context_length']}, fit {self.settings['fit_tokens']} tokens, "
            f"held-out {self.settings['eval_tokens']} tokens, ablation {self.settings['ablation_tokens']} tokens)",
            f"{'layer':>5}  {'held-out R2':>11}  {'train R2':>8}  {'removal cost':>12}  {'cos(in,out)':>11}  {'|attn|/|x|':>10}",
        ]
        for row in self.rows:
            if row.layer_type != ATTENTION_LAYER:
                lines.append(f"{row.layer:>5}  {'(MLP-only layer: no attention)':>58}")
                continue
            cost = "-" if row.removal_cost is None else f"{row.removal_cost:+.4f}"
            lines.append(
                f"{row.layer:>5}  {row.r2:>11.4f}  {row.train_r2:>8.4f}  {cost:>12}  "
                f"{row.cosine:>11.4f}  {row.update_ratio:>10.4f}"
            )
        for k in sorted(self.candidates):
            rec = self.recommend(k)
            lines.append(f"k={k}: recommend layers {rec.layers}: {rec.description}")
        return "\n".join(lines)


def _describe_choice(k: int, best: str, measured: dict[str, dict]) -> str:
    chosen = measured[best]
    others = ", ".join(
        f"{name} {c['layers']}: {c['joint_cost']:+.4f} ({c['shared_pairs']} pairs)"
        for name, c in measured.items()
        if name != best
    )
    return (
        f"{best} set for k={k}: joint held-out loss increase {chosen['joint_cost']:+.4f} nats/token, "
        f"{chosen['shared_pairs']} shared pairs" + (f"; other candidates: {others}" if others else "")
    )


def lowest_cost_pairs(costs: dict[int, float], k: int) -> list[int] | None:
    """k // 2 disjoint pairs of adjacent attention layers, plus one single layer if k is odd, with the
    lowest summed single-layer cost (dynamic programming over the layers); None if no such set exists."""
    layers = sorted(costs)
    num_pairs, num_singles = k // 2, k % 2
    infinity = (math.inf, ())
    best = {(0, 0): (0.0, ())}  # (pairs used, singles used) -> (cost, chosen layers) over the layers seen so far
    previous_best = {}
    for position, layer in enumerate(layers):
        current = dict(best)
        for (pairs, singles), (cost, chosen) in best.items():
            if singles < num_singles:
                key = (pairs, singles + 1)
                current[key] = min(current.get(key, infinity), (cost + costs[layer], chosen + (layer,)))
        # a pair (previous layer, this layer): extend the states from before the previous layer
        if position > 0 and layers[position - 1] == layer - 1:
            for (pairs, singles), (cost, chosen) in previous_best.items():
                if pairs < num_pairs:
                    key = (pairs + 1, singles)
                    pair_cost = cost + costs[layer - 1] + costs[layer]
                    current[key] = min(current.get(key, infinity), (pair_cost, chosen + (layer - 1, layer)))
        previous_best, best = best, current
    cost, chosen = best.get((num_pairs, num_singles), infinity)
    return sorted(chosen) if chosen or k == 0 else None
