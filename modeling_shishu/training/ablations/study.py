"""The study file: arms (pretraining recipes that differ only in layout), init seeds and measurement settings,
and the checks that keep the comparison fair (same tokens and trainer, parameter-matched arms)."""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ...sizes import count_unique_parameters


# Recipe fields allowed to differ between arms: the layout and where each run is written.
ARM_FIELDS = frozenset({"config_overrides", "num_mlp_layers", "share", "extra_mlp_layers", "output_dir"})


@dataclass
class Arm:
    """One layout of the study: a pretraining recipe plus how the study reports it."""

    name: str
    recipe: Path
    label: str
    match_parent_params: bool = False  # extra_mlp_layers must be the count that best matches the parent


@dataclass
class Study:
    """The study file: arms (the first is the all-attention parent), init seeds and measurement settings."""

    arms: list[Arm]
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    tokenizer_vocab_size: int = 2048
    eval_blocks: int | None = 160  # held-out blocks of max_length tokens for loss / bits per byte
    decode_context: int = 256
    decode_steps: int = 16
    decode_repeats: int = 5
    num_threads: int | None = None  # torch threads; None keeps torch's default

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "Study":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"study file {path} does not exist")
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"study file {path} must hold a YAML mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown key(s) in {path}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        arms = []
        for entry in raw.get("arms") or []:
            if not isinstance(entry, dict) or not {"name", "recipe"} <= set(entry):
                raise ValueError(f"{path}: every arm needs a name and a recipe, got {entry!r}")
            extra = sorted(set(entry) - {f.name for f in dataclasses.fields(Arm)})
            if extra:
                raise ValueError(f"{path}: arm {entry['name']!r} has unknown key(s) {', '.join(extra)}")
            recipe = Path(entry["recipe"])
            if not recipe.is_absolute():
                recipe = path.parent / recipe
            arms.append(
                Arm(
                    name=str(entry["name"]),
                    recipe=recipe,
                    label=str(entry.get("label", entry["name"])),
                    match_parent_params=bool(entry.get("match_parent_params", False)),
                )
            )
        if len(arms) < 2:
            raise ValueError(f"{path}: a study needs at least two arms (the parent first), got {len(arms)}")
        names = [arm.name for arm in arms]
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: arm names must be unique, got {names}")
        study = cls(arms=arms, **{k: v for k, v in raw.items() if k != "arms"})
        study.check()
        return study

    def check(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {self.seeds}")
        if self.tokenizer_vocab_size < 260:
            raise ValueError(
                f"tokenizer_vocab_size must be >= 260 (256 bytes + specials), got {self.tokenizer_vocab_size}"
            )
        if self.eval_blocks is not None and self.eval_blocks < 1:
            raise ValueError(f"eval_blocks must be >= 1 or null (all), got {self.eval_blocks}")
        if self.decode_context < 1 or self.decode_steps < 1 or self.decode_repeats < 1:
            raise ValueError("decode_context, decode_steps and decode_repeats must be >= 1")


def load_arm_recipes(study: Study, output_dir: Path, overrides: list[str]) -> dict:
    """Parse each arm's recipe (plus command-line overrides) and check that the arms differ only in layout."""
    from ..arguments import DataArguments, ModelArguments, TrainArguments, parse_recipe_args

    recipes = {}
    for arm in study.arms:
        argv = ["--config", str(arm.recipe), "--output_dir", str(output_dir / arm.name), *overrides]
        model_args, data_args, train_args = parse_recipe_args((ModelArguments, DataArguments, TrainArguments), argv)
        if model_args.config_name is None:
            raise ValueError(f"arm {arm.name!r}: the study pretrains from scratch, set config_name in {arm.recipe}")
        recipes[arm.name] = (model_args, data_args, train_args)

    def shared(args_tuple):
        values = {}
        for args in args_tuple:
            values.update({k: v for k, v in dataclasses.asdict(args).items() if k not in ARM_FIELDS})
        return values

    parent = study.arms[0].name
    reference = shared(recipes[parent])
    for arm in study.arms[1:]:
        values = shared(recipes[arm.name])
        differing = sorted(k for k in set(reference) | set(values) if reference.get(k) != values.get(k))
        if differing:
            raise ValueError(
                f"arm {arm.name!r} differs from {parent!r} in {', '.join(differing)}: every arm must train on the "
                f"same tokens with the same trainer; only {', '.join(sorted(ARM_FIELDS))} may differ"
            )
        if recipes[arm.name][0].config_overrides != recipes[parent][0].config_overrides:
            raise ValueError(
                f"arm {arm.name!r}: config_overrides differ from {parent!r}; the arms must share one parent shape"
            )
    return recipes


def extra_layers_to_match(parent_params: int, make_config, max_extra: int = 64) -> tuple[int, int]:
    """The `extra_mlp_layers` whose unique parameter count is closest to `parent_params` (smallest on a
    tie), and that count. `make_config(n)` builds the layout with n extra MLP-only layers."""
    best = None
    for extra in range(max_extra + 1):
        params = count_unique_parameters(make_config(extra))
        if best is None or abs(params - parent_params) < abs(best[1] - parent_params):
            best = (extra, params)
        if params > parent_params:  # counts only grow with extra layers
            break
    return best


def check_parameter_matching(study: Study, recipes: dict, tokenizer) -> None:
    """Refuse an arm marked `match_parent_params` whose extra_mlp_layers is not the best match."""
    from ..pretrain import build_config

    parent_args = recipes[study.arms[0].name][0]
    parent_params = count_unique_parameters(build_config(parent_args, tokenizer))
    for arm in study.arms:
        if not arm.match_parent_params:
            continue
        model_args = recipes[arm.name][0]
        best, params = extra_layers_to_match(
            parent_params, lambda n: build_config(dataclasses.replace(model_args, extra_mlp_layers=n), tokenizer)
        )
        if model_args.extra_mlp_layers != best:
            raise ValueError(
                f"arm {arm.name!r} should match the parent's {parent_params:,} parameters: extra_mlp_layers="
                f"{best} gives {params:,}, but {arm.recipe} sets {model_args.extra_mlp_layers}"
            )
