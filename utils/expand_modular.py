"""Expand `modeling_shishu/modular_shishu.py` into the shipped `modeling_shishu/modeling_shishu.py`.

    python utils/expand_modular.py            # regenerate (make modular)
    python utils/expand_modular.py --check    # the expanded file still matches its modular source (no converter)

Expansion uses transformers' own `utils/modular_model_converter.py` from a transformers source tree: `--source DIR`,
else the first of `$SHISHU_CACHE/upstream/transformers-*` (newest first) holding it. A user fills that folder with
`git clone --depth 1 --branch v5.23.0 https://github.com/huggingface/transformers
$SHISHU_CACHE/upstream/transformers-5.23.0`. Llama's code is read from the installed transformers.

The converter's output is made deterministic and fit for remote code here, after expansion:
- its relative imports of Llama's dependencies (`from ...activations import ACT2FN`) become absolute: remote code is
  loaded outside the transformers package, where they cannot resolve;
- its header, which names a path inside a transformers checkout, is replaced by ours: the converter and Llama
  versions, and the sha256 of the modular source and of the expanded body, which `--check` compares;
- ruff formats it with this project's settings.
"""

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
MODULAR = REPO / "modeling_shishu" / "modular_shishu.py"
MODELING = REPO / "modeling_shishu" / "modeling_shishu.py"
CONFIGURATION = REPO / "modeling_shishu" / "configuration_shishu.py"
HEADER_END = "# --- end of generated header ---\n"
MODULAR_HASH = re.compile(r"^# modular_shishu\.py sha256: ([0-9a-f]{64})$", re.MULTILINE)
BODY_HASH = re.compile(r"^# expanded body sha256: ([0-9a-f]{64})$", re.MULTILINE)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_header(text: str) -> tuple[str, str]:
    if HEADER_END not in text:
        raise ValueError(f"{MODELING.name} has no generated header: run `make modular`")
    header, body = text.split(HEADER_END, 1)
    return header + HEADER_END, body


def check(modular: Path = MODULAR, modeling: Path = MODELING) -> list[str]:
    """What is out of date between the modular source and the expanded file (empty when they match)."""
    header, body = split_header(modeling.read_text(encoding="utf-8"))
    problems = []
    recorded = MODULAR_HASH.search(header)
    if recorded is None or recorded.group(1) != sha256(modular.read_text(encoding="utf-8")):
        problems.append(f"{modular.name} changed since {modeling.name} was expanded from it: run `make modular`")
    recorded = BODY_HASH.search(header)
    if recorded is None or recorded.group(1) != sha256(body):
        problems.append(f"{modeling.name} was edited by hand: edit {modular.name} and run `make modular`")
    return problems


def find_source(explicit: str | None) -> Path:
    candidates = [Path(explicit)] if explicit else []
    if not explicit:
        cache = Path(os.environ.get("SHISHU_CACHE", Path.home() / ".cache" / "shishu")) / "upstream"
        candidates = sorted(cache.glob("transformers-*"), key=lambda path: _version_key(path.name), reverse=True)
    for candidate in candidates:
        if (candidate / "utils" / "modular_model_converter.py").is_file():
            return candidate
    raise SystemExit(
        "transformers' utils/modular_model_converter.py not found: pass --source DIR (a transformers checkout), or run"
        " `git clone --depth 1 --branch v5.23.0 https://github.com/huggingface/transformers"
        " $SHISHU_CACHE/upstream/transformers-5.23.0`"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)[:3])


def source_version(source: Path) -> str:
    """The transformers version of a source tree: its `__version__`, or a VERSION file for a partial copy."""
    init = source / "src" / "transformers" / "__init__.py"
    if init.is_file():
        match = re.search(r'^__version__ = "([^"]+)"', init.read_text(encoding="utf-8"), re.MULTILINE)
        if match:
            return match.group(1)
    if (source / "VERSION").is_file():
        return (source / "VERSION").read_text(encoding="utf-8").strip()
    return source.name.removeprefix("transformers-")


def expand(source: Path) -> str:
    """The converter's expansion of the modular file (its header and relative imports still in place)."""
    sys.path.insert(0, str(source / "utils"))
    import modular_model_converter

    with tempfile.TemporaryDirectory() as tmp:
        # The converter names the model after `modular_<name>.py` and wants it inside a transformers layout.
        folder = Path(tmp) / "src" / "transformers" / "models" / "shishu"
        folder.mkdir(parents=True)
        shutil.copy(MODULAR, folder / MODULAR.name)
        shutil.copy(CONFIGURATION, folder / CONFIGURATION.name)
        converted = modular_model_converter.convert_modular_file(str(folder / MODULAR.name))
    return converted["modeling"]


def absolute_imports(code: str) -> str:
    return re.sub(r"^from \.\.\.(\w)", r"from transformers.\1", code, flags=re.MULTILINE)


def ruff(path: Path) -> None:
    executable = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    subprocess.run([executable, "check", "--fix", "--quiet", str(path)], check=True, cwd=REPO)
    subprocess.run([executable, "format", "--quiet", str(path)], check=True, cwd=REPO)


def regenerate(source: Path) -> None:
    import transformers

    code = expand(source)
    body = absolute_imports(code[code.index("\n# Copyright") + 1 :])
    MODELING.write_text(body, encoding="utf-8")
    ruff(MODELING)
    body = MODELING.read_text(encoding="utf-8")
    header = (
        "# This file was generated from modular_shishu.py by transformers' utils/modular_model_converter.py\n"
        f"# (transformers {source_version(source)}), with Llama's code from transformers {transformers.__version__}.\n"
        "# Do not edit it: edit modular_shishu.py and run `make modular` (utils/expand_modular.py).\n"
        f"# modular_shishu.py sha256: {sha256(MODULAR.read_text(encoding='utf-8'))}\n"
        f"# expanded body sha256: {sha256(body)}\n"
        f"{HEADER_END}"
    )
    MODELING.write_text(header + body, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="a transformers source tree holding utils/modular_model_converter.py")
    parser.add_argument("--check", action="store_true", help="only check that the expanded file is up to date")
    args = parser.parse_args()
    if args.check:
        problems = check()
        print("\n".join(problems) or f"{MODELING.name} matches {MODULAR.name}")
        raise SystemExit(1 if problems else 0)
    source = find_source(args.source)
    regenerate(source)
    print(f"expanded {MODULAR.name} -> {MODELING.name} with the converter of transformers {source_version(source)}")


if __name__ == "__main__":
    main()
