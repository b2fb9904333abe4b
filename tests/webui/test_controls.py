"""unlearnkit/webui/controls.py: the panel's controls as data, in settings order, with "Send to" names."""
import pytest

from unlearnkit.webui import controls
from unlearnkit.webui import settings as panel


def test_every_control_has_one_spec_in_settings_order():
    specs = controls.panel_specs()
    assert [s.name for s in specs] == panel.control_names()
    assert panel.from_controls([s.value for s in specs]) == panel.PanelSettings()  # defaults are the defaults
    kinds = {s.name: s.kind for s in specs}
    assert kinds["enabled"] == "checkbox" and kinds["slug patches"] == "multiselect"
    assert kinds["weight 4"] == "slider"
    rows = controls.panel_rows()
    assert [s.name for s in rows[0]] == ["enabled"] and len(rows) == 1 + panel.MAX_SHARDS + 2


def test_a_control_added_in_settings_is_built_without_script_edits(monkeypatch):
    extra = {"name": "sampler", "kind": "dropdown", "label": "Sampler", "value": "a", "choices": ("a", "b")}
    monkeypatch.setattr(panel, "EXTRA_CONTROLS", (*panel.EXTRA_CONTROLS, extra))
    with pytest.raises(ValueError, match=r"not in settings.control_names\(\): \['sampler'\]"):
        controls.panel_specs()
    names = panel.control_names()
    monkeypatch.setattr(panel, "control_names", lambda max_shards=panel.MAX_SHARDS: [*names, "sampler"])
    spec = controls.panel_specs()[-1]
    assert spec.name == "sampler" and controls.choices_of(spec, {}) == ["a", "b"]
    assert controls.paste_names()[-1] == controls.paste_name("sampler")


def test_the_panel_offers_the_evaluate_modes_with_fast_as_default():
    specs = {s.name: s for s in controls.panel_specs()}
    assert controls.choices_of(specs["evaluate"], {}) == ["fast", "per-sample", "every-shard"]
    assert specs["evaluate"].value == "fast" and specs["fast sigma"].kind == "slider"
    settings = panel.from_controls([s.value for s in controls.panel_specs()])
    assert settings.evaluation.mode == "fast" and settings.prune_eps == panel.DEFAULT_EPS


def test_bad_specs_and_file_choices():
    with pytest.raises(ValueError, match="control 'x': kind must be one of"):
        controls.ControlSpec("x", "knob", "X")
    with pytest.raises(ValueError, match="control 'x': files must be one of"):
        controls.ControlSpec("x", "dropdown", "X", files="loras")
    gate_file = next(s for s in controls.panel_specs() if s.name == "gate file")
    assert controls.choices_of(gate_file, {"gates": ["g.safetensors"]}) == [panel.NONE, "g.safetensors"]


def test_send_to_names_are_never_infotext_keys():
    """The webui's infotext parser reads keys of word characters, spaces, '-' and '/': a dot never parses."""
    import re

    # modules/infotext_utils.py re_param
    re_param = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
    names = controls.paste_names()
    assert len(set(names)) == len(names)
    text = ", ".join(f"{name}: 1" for name in names)
    assert not any(key in names for key, _ in re_param.findall(text))
