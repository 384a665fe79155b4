"""`shishu demo`: the main job end to end on the offline defaults (see `cli`)."""

from .cli import add_arguments, build_release, run
from .pipeline import HEAL_RECIPE, VARIANT, build_stages
from .report import final_table
from .stages import Stage


__all__ = [
    "HEAL_RECIPE",
    "VARIANT",
    "Stage",
    "add_arguments",
    "build_release",
    "build_stages",
    "final_table",
    "run",
]
