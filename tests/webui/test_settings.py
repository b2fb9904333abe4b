"""unlearnkit/webui/settings.py: panel values <-> settings <-> infotext, as the webui writes and parses it."""
import json
import re

import pytest

from unlearnkit.webui import settings as panel

# the webui's infotext grammar (modules/infotext_utils.py: re_param_code, quote, unquote), restated
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def webui_quote(text):
    text = str(text)
    return (
        text
        if "," not in text and "\n" not in text and ":" not in text
        else json.dumps(text, ensure_ascii=False)
    )


def webui_roundtrip(params):
    line = "Steps: 20, Sampler: Euler a, " + ", ".join(f"{k}: {webui_quote(v)}" for k, v in params.items())
    out = {}
    for k, v in RE_PARAM.findall(line):
        out[k] = json.loads(v) if v[:1] == '"' and v[-1:] == '"' else v
    return out


def full_settings():
    return panel.PanelSettings(
        enabled=True,
        shards=(("styles/bold, v2.safetensors", 0.5), ("slanted.ckpt", 0.25)),
        gate="classifier",
        gate_file="style: gate.safetensors",
        prune_eps=0.01,
        plot=False,
        text_encoder="vangogh_unlearned",
        slug_patches=("a.safetensors", "b,c.safetensors"),
    )


def test_controls_roundtrip_and_order():
    s = full_settings()
    values = panel.to_controls(s, evaluate=True)
    assert len(values) == len(panel.control_names()) == len(panel.control_names(evaluate=False)) + 2
    assert panel.from_controls(values) == s
    assert values[panel.control_names().index("shard 3")] == panel.NONE  # unused slot emptied


def test_from_controls_skips_empty_slots_and_none_entries():
    names = panel.control_names()
    values = panel.to_controls(panel.PanelSettings())
    values[names.index("shard 2")] = "b.safetensors"
    values[names.index("weight 2")] = 0.3
    values[names.index("slug patches")] = None
    s = panel.from_controls(values)
    assert s.shards == (("b.safetensors", 0.3),) and s.slug_patches == () and s.text_encoder == ""


def test_from_controls_wrong_length_names_expected_controls():
    with pytest.raises(ValueError, match="expected 15 or, with the evaluate controls, 17 .*fast sigma"):
        panel.from_controls([True])


def test_a_panel_without_the_evaluate_controls_runs_the_earlier_routing():
    values = panel.to_controls(full_settings(), evaluate=False)  # a panel saved before the evaluate controls
    s = panel.from_controls(values)
    assert s.evaluate == "every-shard" and s.prune_eps == 0.01 and s.gate == "classifier"
    assert s.evaluation.routing() == {"route": "batch", "prune_eps": 0.01, "mc_sigma": float("inf")}


def test_evaluate_is_written_to_the_infotext_and_read_back():
    s = panel.PanelSettings(enabled=True, shards=(("a", 1.0),), evaluate="fast", prune_eps=0.02,
                            fast_sigma=2.5)
    params = webui_roundtrip(panel.infotext_params(s))
    assert params["UnlearnKit evaluate"] == "fast" and params["UnlearnKit fast sigma"] == "2.5"
    assert panel.from_infotext(params) == s
    assert panel.paste_value(params, "evaluate") == "fast" and panel.paste_value(params, "fast sigma") == 2.5
    per_sample = panel.infotext_params(panel.PanelSettings(enabled=True, shards=(("a", 1.0),),
                                                           evaluate="per-sample"))
    assert "UnlearnKit fast sigma" not in per_sample


def test_infotexts_of_earlier_versions_restore_their_routing_and_gate_spelling():
    params = {"UnlearnKit shard 1": "a", "UnlearnKit weight 1": "1", "UnlearnKit prune eps": "0.05",
              "UnlearnKit gate": "density (ODE sampler)"}
    s = panel.from_infotext(params)
    assert s.gate == "density-ode" and s.evaluate == "every-shard" and s.prune_eps == 0.05
    assert panel.paste_value(params, "gate") == "density-ode"


def test_infotext_survives_the_webui_text_format():
    s = full_settings()
    params = panel.infotext_params(s, {"slanted.ckpt": "abcdef0123"})
    parsed = webui_roundtrip(params)
    assert parsed["UnlearnKit shard hash 2"] == "abcdef0123"
    assert panel.from_infotext(parsed) == s


def test_infotext_disabled_writes_nothing_and_enabled_alone_restores_the_box():
    assert panel.infotext_params(panel.PanelSettings()) == {}
    params = panel.infotext_params(panel.PanelSettings(enabled=True))
    assert panel.from_infotext(webui_roundtrip(params)) == panel.PanelSettings(enabled=True)


def test_paste_sets_every_control_and_empties_stale_slots():
    params = webui_roundtrip(panel.infotext_params(full_settings()))
    assert panel.paste_value(params, "enabled") is True
    assert panel.paste_value(params, "shard 1") == "styles/bold, v2.safetensors"
    assert panel.paste_value(params, "weight 2") == 0.25
    assert panel.paste_value(params, "shard 3") == panel.NONE
    assert panel.paste_value(params, "slug patches") == ["a.safetensors", "b,c.safetensors"]


def test_paste_without_unlearnkit_entries_only_turns_the_panel_off():
    params = {"Steps": "20", "Sampler": "Euler a"}
    assert panel.paste_value(params, "enabled") is False
    assert all(panel.paste_value(params, n) is None for n in panel.control_names()[1:])


@pytest.mark.parametrize("change, message", [
    ({"gate": "fancy"}, "gate: expected one of"),
    ({"gate": "classifier", "gate_file": ""}, "gate file: the 'classifier' gate needs"),
    ({"prune_eps": 0.9}, "prune eps"),
    ({"evaluate": "quick"}, "evaluate: expected one of"),
    ({"fast_sigma": -1.0}, "fast sigma: expected a noise level"),
    ({"shards": (("a", 1.0), ("a", 0.5))}, "shard 2: 'a' is already chosen in shard 1"),
    ({"shards": (("a", 0.0), ("b", 0.0))}, "all are zero"),
    ({"shards": (("a", float("nan")),)}, "weight 1"),
    ({"slug_patches": ("p", "p")}, "slug patches"),
])
def test_check_names_the_control(change, message):
    s = panel.PanelSettings(
        enabled=True, shards=(("a", 1.0),), **{k: v for k, v in change.items() if k != "shards"}
    )
    if "shards" in change:
        s = panel.PanelSettings(enabled=True, shards=change["shards"])
    with pytest.raises(ValueError, match=re.escape(message) if "(" in message else message):
        s.check()


def test_bad_number_in_infotext_names_the_key():
    with pytest.raises(ValueError, match="UnlearnKit weight 1"):
        panel.from_infotext({"UnlearnKit shard 1": "a", "UnlearnKit weight 1": "heavy"})
