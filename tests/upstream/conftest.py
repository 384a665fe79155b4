"""This folder runs transformers' own model tests (`make test-upstream`); it needs a transformers source tree's
`tests` package on PYTHONPATH, so the normal suite (`make test`) leaves it out."""

import importlib.util


if importlib.util.find_spec("tests.causal_lm_tester") is None:
    collect_ignore_glob = ["test_*.py"]
