"""`shishu push`: validate a checkpoint folder and upload it, with its card and scores, to the Hub.

    shishu eval --model DIR --baseline smollm2-135m --suite offline --out runs/eval
    shishu card DIR --results runs/eval/results.json --repo-id ORG/NAME
    shishu push DIR --repo-id ORG/NAME [--private] [--dry-run]

Validation, all before anything is sent:
1. the folder holds config.json and safetensors weights, and no pickle files (*.bin, *.pt, ...);
2. its eval_results.json is a valid `shishu eval` results file and names the model of the card;
3. README.md (`model-index`) and .eval_results/*.yaml, parsed back with huggingface_hub, carry exactly the
   numbers of eval_results.json, the weights are the ones that were evaluated (sha256), and the card was
   rendered for this --repo-id;
4. the folder's remote-code files are the ones this version of the package writes (a stale copy on the Hub
   is how old bugs live on; `--allow-stale-remote-code` publishes them anyway);
5. a FRESH Python process, with an empty transformers modules cache and no access to this repository's
   code, loads the folder with `trust_remote_code=True` and runs a forward pass.

Then `HfApi().upload_folder` sends exactly the listed files. `--dry-run` does everything but the upload
and prints the files and their sizes. The training stages push their `final/` folder through the same
`push_folder` at the end of a run (`push_to_hub`, `hub_model_id`); a folder without a card yet is checked
for everything but the card (1, 4 and 5).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from ..evaluation import read_results
from ..loading import read_config
from .card import CARD_FILE, EVAL_RESULTS_DIR, RESULTS_COPY, check_card, check_repo_id
from .public_records import unpublished_paths


# Formats that unpickle on load: never published (safetensors only).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Local clutter that never belongs in a model repository.
IGNORED_NAMES = {".git", "__pycache__", ".cache", ".ipynb_checkpoints", ".DS_Store"}
# The remote-code pair `save_pretrained` copies next to a ShishuLM checkpoint.
REMOTE_CODE_FILES = ("configuration_shishu.py", "modeling_shishu.py")
LOAD_TIMEOUT_SECONDS = 900

# Runs in the fresh process: only transformers and torch, the folder's own remote code.
_LOAD_CHECK = textwrap.dedent(
    """
    import json, math, sys
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = sys.argv[1]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    ids = tokenizer("To be, or not to be, that is the question.", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    finite = bool(torch.isfinite(logits).all())
    print(json.dumps({
        "class": type(model).__name__,
        "module": type(model).__module__,
        "model_type": config.model_type,
        "num_parameters": model.num_parameters(),
        "logits_shape": list(logits.shape),
        "finite": finite,
    }))
    sys.exit(0 if finite else 3)
    """
)


def list_upload_files(folder: Path) -> list[tuple[str, int]]:
    """Every file that would be uploaded, as (path relative to the folder, bytes), sorted."""
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part in IGNORED_NAMES for part in relative.parts) or not path.is_file():
            continue
        if any(part.startswith(".") and part != EVAL_RESULTS_DIR for part in relative.parts):
            continue  # temporary files of interrupted atomic writes (".name.tmp-...") and other dotfiles
        files.append((relative.as_posix(), path.stat().st_size))
    return files


def stale_remote_code(folder: Path) -> list[str]:
    """The remote-code files of a ShishuLM folder that differ from (or lack) this package's own copies."""
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "shishu":
        return []
    package = Path(__file__).resolve().parents[1]
    return [
        name
        for name in REMOTE_CODE_FILES
        if not (folder / name).is_file() or (folder / name).read_bytes() != (package / name).read_bytes()
    ]


def check_load_in_fresh_process(folder: Path, timeout: float = LOAD_TIMEOUT_SECONDS) -> dict:
    """Load `folder` with remote code in a new interpreter and run one forward pass; return what it saw.

    The child starts in an empty temporary directory with an empty `HF_MODULES_CACHE` and the Hub offline,
    so it can only use the files in the folder (not this repository's `modeling_shishu` package, not a
    previously cached copy of the remote code).
    """
    with tempfile.TemporaryDirectory(prefix="shishu-push-check-") as scratch:
        env = {
            **os.environ,
            "HF_MODULES_CACHE": str(Path(scratch) / "modules"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        env.pop("PYTHONPATH", None)
        try:
            result = subprocess.run(
                [sys.executable, "-c", _LOAD_CHECK, str(folder.resolve())],
                cwd=scratch,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise ValueError(f"{folder} did not load within {timeout:.0f} s in a fresh process") from None
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        raise ValueError(f"{folder} fails to load with trust_remote_code=True in a fresh process: {reason}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def validate_folder(
    folder: str | os.PathLike,
    repo_id: str | None = None,
    load_timeout: float = LOAD_TIMEOUT_SECONDS,
    allow_stale_remote_code: bool = False,
    require_card: bool = True,
) -> dict:
    """Run every check `shishu push` runs before an upload. Raises `ValueError` naming the first problem
    class found (all card/results mismatches are listed); returns the fresh-process load report.

    With `require_card=False` (a training run's `final/`), a folder holding neither card nor results is
    checked for everything else; one holding either is checked in full."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such checkpoint folder: {folder}")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} holds no config.json: not a checkpoint folder")
    # The load check below runs the folder's remote code: only ShishuLM's own pair, compared with this
    # package's copies, is ever run.
    references = []
    for value in (read_config(folder).get("auto_map") or {}).values():  # a tokenizer's value is a [slow, fast] pair
        references += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if v]
    own_modules = {Path(name).stem for name in REMOTE_CODE_FILES}
    foreign = sorted(ref for ref in references if ref.split("--")[-1].split(".")[0] not in own_modules)
    if foreign:
        raise ValueError(
            f"{folder / 'config.json'} auto_map names code that is not ShishuLM's ({', '.join(foreign)}): refusing to run it"
        )
    files = [name for name, _ in list_upload_files(folder)]
    pickles = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ValueError(f"refusing to publish pickle files (safetensors only): {', '.join(pickles)}")
    if not any(name.endswith(".safetensors") for name in files):
        raise ValueError(f"{folder} holds no *.safetensors weights")
    carded = require_card or any((folder / name).is_file() for name in (CARD_FILE, RESULTS_COPY))
    if carded:
        _check_card_and_results(folder, repo_id)  # includes: no local paths in the records
    else:
        unpublished = unpublished_paths(folder)
        if unpublished:
            name, paths = next(iter(unpublished.items()))
            raise ValueError(f"{folder / name} names local paths ({paths[0]}): publish_records() rewrites them")
    stale = stale_remote_code(folder)
    if stale and not allow_stale_remote_code:
        raise ValueError(
            f"{', '.join(stale)} in {folder} differ from the remote code this version of shishulm writes: re-save "
            f"the checkpoint with it (`ShishuForCausalLM.from_pretrained(DIR).save_pretrained(DIR)`) or pass "
            f"--allow-stale-remote-code"
        )
    report = check_load_in_fresh_process(folder, timeout=load_timeout)
    if carded:
        results = read_results(folder / RESULTS_COPY)
        model = next(m for m in results["models"] if m["label"] == results["card"]["model"])
        if model.get("num_parameters") and model["num_parameters"] != report["num_parameters"]:
            raise ValueError(
                f"the folder loads a model with {report['num_parameters']:,} parameters; the evaluated model "
                f"{model['label']!r} had {model['num_parameters']:,}"
            )
    return report


def _check_card_and_results(folder: Path, repo_id: str | None) -> None:
    for required in (CARD_FILE, RESULTS_COPY):
        if not (folder / required).is_file():
            raise ValueError(
                f"{folder} has no {required}: run `shishu card {folder} --results RESULTS_JSON --repo-id ORG/NAME` first"
            )
    results = read_results(folder / RESULTS_COPY)  # ValueError names what is wrong with a bad file
    problems = check_card(folder)
    card_repo = (results.get("card") or {}).get("repo_id")
    if repo_id is not None and card_repo != repo_id:
        problems.append(
            f"the card was rendered for repo id {card_repo!r}, not {repo_id!r}: re-run "
            f"`shishu card {folder} --results {folder / RESULTS_COPY} --repo-id {repo_id}`"
        )
    if problems:
        raise ValueError("card and results disagree: " + "; ".join(problems))


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder", metavar="DIR", help="checkpoint folder with README.md and eval_results.json (from `shishu card`)"
    )
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the Hub model repository")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--dry-run", action="store_true", help="validate and list what would be sent, upload nothing")
    parser.add_argument(
        "--allow-stale-remote-code",
        action="store_true",
        help="publish remote-code files that differ from the ones this version of the package writes",
    )
    parser.add_argument("--revision", help="branch to upload to (default: the repository's main branch)")
    parser.add_argument(
        "--commit-message", default=None, help="commit message (default: 'Upload <name> with its evaluation')"
    )


def upload_folder_arguments(
    folder: Path,
    files: list[tuple[str, int]],
    repo_id: str,
    revision: str | None = None,
    commit_message: str | None = None,
) -> dict:
    """`HfApi.upload_folder` keyword arguments: exactly the listed files, and the repository's benchmark scores
    replaced as a whole (huggingface_hub never deletes a file that the same commit uploads)."""
    carded = (folder / CARD_FILE).is_file()
    return {
        "repo_id": repo_id,
        "folder_path": str(folder),
        "allow_patterns": [name for name, _ in files],
        # scores an earlier push filed that this evaluation no longer files under a benchmark must not linger
        "delete_patterns": [f"{EVAL_RESULTS_DIR}/*.yaml"],
        "revision": revision,
        "commit_message": commit_message
        or f"Upload {folder.resolve().name}" + (" with its evaluation" if carded else ""),
    }


class UploadError(RuntimeError):
    """The upload itself failed (no network, no token, no permission, ...) after every check passed."""


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    allow_stale_remote_code: bool = False,
    require_card: bool = True,
    log=print,
) -> str | None:
    """Validate `folder` (`validate_folder`), list the files and upload exactly those to `repo_id`.

    Returns the commit URL, or None on a dry run. Bad input raises `ValueError` / `FileNotFoundError` before
    anything is sent; a failed upload raises `UploadError`."""
    check_repo_id(repo_id)
    folder = Path(folder)
    report = validate_folder(
        folder, repo_id=repo_id, allow_stale_remote_code=allow_stale_remote_code, require_card=require_card
    )
    carded = (folder / CARD_FILE).is_file()
    log(
        f"validated {folder}: loads in a fresh process as {report['class']} ({report['model_type']}, "
        f"{report['num_parameters']:,} parameters), "
        + (
            f"card and .eval_results match {RESULTS_COPY}"
            if carded
            else "no model card yet (`shishu eval` + `shishu card` write one)"
        )
    )
    files = list_upload_files(folder)
    width = max(len(name) for name, _ in files)
    for name, size in files:
        log(f"  {name:<{width}}  {_human(size):>9}")
    log(
        f"  {len(files)} files, {_human(sum(size for _, size in files))} -> https://huggingface.co/{repo_id}"
        + (" (private)" if private else "")
    )
    if dry_run:
        log("dry run: nothing uploaded")
        return None

    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(**upload_folder_arguments(folder, files, repo_id, revision, commit_message))
    except Exception as error:  # no network, no token, no permission, ...: one clear line
        raise UploadError(f"upload to {repo_id} failed: {type(error).__name__}: {error}") from error
    url = str(getattr(commit, "commit_url", commit))
    log(f"uploaded: {url}")
    return url


def run(args: argparse.Namespace) -> int:
    try:
        push_folder(
            args.folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            dry_run=args.dry_run,
            allow_stale_remote_code=args.allow_stale_remote_code,
        )
    except UploadError as error:
        print(f"shishu push: error: {error}", file=sys.stderr)
        return 1
    return 0


__all__ = [
    "UploadError",
    "check_load_in_fresh_process",
    "check_repo_id",
    "list_upload_files",
    "push_folder",
    "stale_remote_code",
    "upload_folder_arguments",
    "validate_folder",
]
