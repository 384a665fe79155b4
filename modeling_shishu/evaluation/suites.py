"""Evaluation suites: checked-in lists of lm-eval tasks with their shots, headline metric and means.

Suites ship with the package (`evaluation/data/suites/*.yaml`, see `evaluation/data/README.md`);
`$SHISHU_EVAL_DIR` points at another folder holding `suites/` and `tasks/`.
"""

import dataclasses
import os
from pathlib import Path

import yaml


DEFAULT_SUITE = "offline"


class HubUnreachableError(RuntimeError):
    """A suite needs the Hugging Face Hub and the Hub cannot be reached from here."""


def eval_root() -> Path:
    """The suites and task templates: `$SHISHU_EVAL_DIR`, else the ones shipped in the package (`evaluation/data/`)."""
    if os.environ.get("SHISHU_EVAL_DIR"):
        root = Path(os.environ["SHISHU_EVAL_DIR"]).expanduser()
    else:
        root = Path(__file__).resolve().parent / "data"
    if not (root / "suites").is_dir():
        raise FileNotFoundError(
            f"no eval suites at {root / 'suites'}: point SHISHU_EVAL_DIR at a folder with suites/ and tasks/"
        )
    return root


def display_path(path: Path) -> str:
    """`suites/...` or `tasks/...` for the shipped files, the absolute path otherwise."""
    root = eval_root().resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


@dataclasses.dataclass
class SuiteTask:
    """One entry of a suite: an lm-eval task (or group) name, its shots and its headline metric."""

    task: str
    num_fewshot: int | None  # None keeps the task's own default
    metric: str
    filter: str = "none"

    @property
    def result_key(self) -> str:
        return f"{self.metric},{self.filter}"


@dataclasses.dataclass
class SuiteMean:
    """An unweighted mean of several suite tasks' headline scores (one metric), reported next to the tasks."""

    id: str
    name: str
    tasks: list[str]


@dataclasses.dataclass
class Suite:
    """A suite file: its tasks, the means reported next to them, and where offline task templates are."""

    name: str
    description: str
    needs_hub: bool
    tasks: list[SuiteTask]
    path: Path
    task_templates: Path | None = None  # offline suites: lm-eval YAML templates to materialise
    means: list[SuiteMean] = dataclasses.field(default_factory=list)

    def select(self, names: list[str] | None) -> "Suite":
        """The same suite restricted to `names` (all tasks when `names` is empty); a mean is kept only when all
        its tasks are."""
        if not names:
            return self
        known = {task.task for task in self.tasks}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"--tasks {', '.join(unknown)} not in suite {self.name!r} (its tasks: {', '.join(known)})"
            )
        return dataclasses.replace(
            self,
            tasks=[task for task in self.tasks if task.task in names],
            means=[mean for mean in self.means if set(mean.tasks) <= set(names)],
        )


def available_suites() -> list[str]:
    return sorted(path.stem for path in (eval_root() / "suites").glob("*.yaml"))


def _read_tasks(data: dict, where: str) -> list[SuiteTask]:
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list) or not data["tasks"]:
        raise ValueError(f"{where}: expected a mapping with a non-empty 'tasks' list")
    tasks = []
    for index, entry in enumerate(data["tasks"]):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("task"), str)
            or not isinstance(entry.get("metric"), str)
        ):
            raise ValueError(f"{where}: tasks[{index}] needs a 'task' name and a 'metric'")
        shots = entry.get("num_fewshot")
        if shots is not None and (not isinstance(shots, int) or shots < 0):
            raise ValueError(f"{where}: tasks[{index}] ({entry['task']}): num_fewshot must be an integer >= 0 or null")
        tasks.append(SuiteTask(entry["task"], shots, entry["metric"], str(entry.get("filter", "none"))))
    names = [task.task for task in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: a task is listed twice")
    return tasks


def _read_means(data: dict, tasks: list[SuiteTask], where: str) -> list[SuiteMean]:
    metrics = {task.task: task.metric for task in tasks}
    means = []
    for index, entry in enumerate(data.get("means") or []):
        members = entry.get("tasks") if isinstance(entry, dict) else None
        if (
            not isinstance(entry.get("id") if members else None, str)
            or not isinstance(members, list)
            or len(members) < 2
        ):
            raise ValueError(f"{where}: means[{index}] needs an 'id' and a list of at least two 'tasks'")
        if not set(members) <= set(metrics) or len({metrics[task] for task in members}) != 1:
            raise ValueError(
                f"{where}: means[{index}] ({entry['id']}): its tasks must be suite tasks sharing one metric"
            )
        means.append(SuiteMean(entry["id"], str(entry.get("name", entry["id"])), list(members)))
    return means


def load_suite(name_or_path: str) -> Suite:
    """Read a suite by name (`suites/<name>.yaml` under `eval_root()`) or from a YAML path, and check its fields."""
    path = Path(name_or_path)
    if not path.suffix == ".yaml":
        path = eval_root() / "suites" / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown suite {name_or_path!r}; choose from {', '.join(available_suites())}")
    elif not path.is_file():
        raise FileNotFoundError(f"no such suite file: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    where = f"suite file {path}"
    tasks = _read_tasks(data, where)
    templates = data.get("task_templates")
    return Suite(
        name=str(data.get("name", path.stem)),
        description=str(data.get("description", "")),
        needs_hub=bool(data.get("needs_hub", True)),
        tasks=tasks,
        path=path.resolve(),
        # relative to the folder above suites/ (the eval root)
        task_templates=(path.parent.parent / templates).resolve() if templates else None,
        means=_read_means(data, tasks, where),
    )


def check_hub_reachable(suite: Suite) -> None:
    """Fail fast, before any model is loaded, when a Hub suite cannot reach the Hub."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    task_names = ", ".join(task.task for task in suite.tasks)
    advice = f"suite {suite.name!r} reads its datasets from the Hugging Face Hub (lm-eval tasks {task_names}); "
    advice += "run it where the Hub is reachable, or use --suite offline"
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            raise HubUnreachableError(f"the Hugging Face Hub is unreachable: {variable} is set; {advice}")
    try:
        get_session().head(constants.ENDPOINT, timeout=10)
    except Exception as error:  # DNS failure, refused connection, proxy error, timeout, ...
        raise HubUnreachableError(
            f"the Hugging Face Hub is unreachable ({constants.ENDPOINT}: {type(error).__name__}: {error}); {advice}"
        ) from None
