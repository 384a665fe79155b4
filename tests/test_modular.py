"""The shipped remote code is what `modular_shishu.py` expands to (`make modular` regenerates it).

The expansion itself needs transformers' converter from a source checkout, which CI does not have: the generated
header records the sha256 of the modular source and of the expanded body, and these tests compare them.
"""

import importlib.util
import re
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("expand_modular", REPO / "utils" / "expand_modular.py")
expand_modular = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = expand_modular
spec.loader.exec_module(expand_modular)


def test_shipped_modeling_file_matches_its_modular_source():
    assert expand_modular.check() == []


def test_check_sees_an_edited_modular_file_and_a_hand_edited_expansion(tmp_path):
    modular, modeling = tmp_path / "modular_shishu.py", tmp_path / "modeling_shishu.py"
    modular.write_text(expand_modular.MODULAR.read_text(encoding="utf-8") + "\n# a change\n", encoding="utf-8")
    modeling.write_text(expand_modular.MODELING.read_text(encoding="utf-8"), encoding="utf-8")
    assert ["changed since" in problem for problem in expand_modular.check(modular, modeling)] == [True]

    modular.write_text(expand_modular.MODULAR.read_text(encoding="utf-8"), encoding="utf-8")
    modeling.write_text(modeling.read_text(encoding="utf-8") + "\n# a hand edit\n", encoding="utf-8")
    assert ["edited by hand" in problem for problem in expand_modular.check(modular, modeling)] == [True]

    modeling.write_text("# no header\n", encoding="utf-8")
    with pytest.raises(ValueError, match="make modular"):
        expand_modular.check(modular, modeling)


def test_expanded_file_is_remote_code_for_every_supported_release():
    """Absolute transformers imports only (remote code is loaded outside the transformers package), and no helper
    that older supported releases lack."""
    header, body = expand_modular.split_header(expand_modular.MODELING.read_text(encoding="utf-8"))
    assert re.search(r"transformers \d+\.\d+", header), "the header names the converter's transformers version"
    relative = re.findall(r"^from (\.+\w*)", body, flags=re.MULTILINE)
    assert relative == [".configuration_shishu"]
    assert not re.search(r"^from transformers.modeling_utils import .*slice_logits_to_keep", body, re.MULTILINE)
    assert "class ShishuForCausalLM(" in body and "def slice_logits_to_keep(" in body
