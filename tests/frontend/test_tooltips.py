"""Every input (required and optional) and every output of the pack's nodes carries a tooltip: V1 nodes put
it in the input spec's "tooltip" and in the class's OUTPUT_TOOLTIPS (one per output)."""
from __future__ import annotations

from workflow_layout import inputs, pack_specs


def missing_tooltips(node_specs: dict) -> list[str]:
    out = []
    for node, spec in sorted(node_specs.items()):
        out += [f"{node} input {name}" for name, _, options in inputs(spec)
                if not str(options.get("tooltip") or "").strip()]
        tips = spec.get("output_tooltips") or []
        names = spec.get("output_name") or spec.get("output") or []
        out += [f"{node} output {name}" for i, name in enumerate(names)
                if i >= len(tips) or not str(tips[i] or "").strip()]
    return out


def test_the_rule_sees_missing_tooltips():
    spec = {"input": {"required": {"a": ["INT", {"tooltip": "x"}], "b": ["INT", {}]}},
            "output": ["IMAGE"], "output_name": ["image"], "output_tooltips": None}
    assert missing_tooltips({"N": spec}) == ["N input b", "N output image"]


def test_every_input_and_output_of_the_pack_has_a_tooltip():
    specs = pack_specs()
    assert len(specs) >= 12
    assert missing_tooltips(specs) == []
