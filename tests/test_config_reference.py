"""docs/CONFIG.md documents every setting and is current (memsel.config_reference writes it)."""

from __future__ import annotations

from pathlib import Path

from memsel.config_reference import reference_markdown, undocumented

REPO = Path(__file__).resolve().parents[1]


def test_every_setting_has_a_docstring():
    assert undocumented() == []


def test_the_reference_in_docs_is_current():
    written = (REPO / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    assert written == reference_markdown(), \
        "docs/CONFIG.md is stale: run `python -m memsel.config_reference > docs/CONFIG.md`"


def test_the_reference_names_every_section_and_component():
    text = reference_markdown()
    for key in ("`ppo.distill_coeff`", "`tune.search_space`", "`plugins`", "`device`", "**`mha`**", "`num_heads`",
                "**`sample`**", "**`generated`**", "**`asha`**", "**`random`**"):
        assert key in text, key
