"""Fast checks of what the real-AUTOMATIC1111 tests rest on, read from the webui's own source (no venv, no
server): the sgm stand-in defines every sgm name the webui mentions, and nothing UnlearnKit would install
upgrades a package the webui pins."""
from __future__ import annotations

import importlib
import re
import sys

import a1111_host as host
import pytest
from a1111_sgm_standin import write_sgm_standin

pytestmark = pytest.mark.skipif(not host.available(), reason=f"no AUTOMATIC1111 source at {host.WEBUI_SRC}")

SGM_NAME = re.compile(r"\bsgm(?:\.[A-Za-z_]\w*)+")
ASSIGNED = re.compile(r"^\s*(sgm(?:\.[A-Za-z_]\w*)+)\s*=(?!=)", re.MULTILINE)


def sgm_names() -> set[str]:
    """Every dotted ``sgm.…`` name the webui's Python sources read (imports, patched classes, isinstance
    checks); for a name the webui assigns (``sgm.x.Cls.method = …``), the object it is assigned on."""
    names = set()
    for folder in ("modules", "extensions-builtin"):
        for path in (host.WEBUI_SRC / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8", errors="replace")
            assigned = set(ASSIGNED.findall(text))
            names.update(n.rsplit(".", 1)[0] if n in assigned else n for n in SGM_NAME.findall(text))
    return names - {"sgm.data"}  # modules/paths.py puts its own stand-in of sgm.data in sys.modules


def resolve(name: str) -> object:
    """The object a dotted name denotes: the longest importable module prefix, then attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


def test_the_sgm_stand_in_defines_every_sgm_name_the_webui_uses(tmp_path, monkeypatch):
    write_sgm_standin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in [m for m in sys.modules if m == "sgm" or m.startswith("sgm.")]:
        monkeypatch.delitem(sys.modules, module)
    names = sgm_names()
    assert "sgm.modules.diffusionmodules.openaimodel.UNetModel.forward" in names  # the scan reads the webui
    missing = []
    for name in sorted(names):
        try:
            resolve(name)
        except (AttributeError, ModuleNotFoundError):
            missing.append(name)
    assert not missing
    with pytest.raises(NotImplementedError, match="SDXL cannot load here"):
        resolve("sgm.models.diffusion.DiffusionEngine")()


def pinned(webui_requirements: list[str]) -> dict[str, str]:
    """{normalised name: version} of the webui's ``name==version`` lines."""
    pins = (line.split("==") for line in webui_requirements if "==" in line)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


@pytest.mark.parametrize("source", ["requirements.txt", "pyproject.toml", "extension install.py"])
def test_nothing_unlearnkit_installs_would_upgrade_a_package_the_webui_pins(source):
    from packaging.requirements import Requirement

    root = host.ROOT
    if source == "requirements.txt":
        specs = [line.split("#")[0].strip() for line in (root / source).read_text().splitlines()]
    elif source == "pyproject.toml":
        import tomllib

        specs = tomllib.loads((root / source).read_text())["project"]["dependencies"]
    else:
        installer = root / "extensions" / "sd-webui-unlearnkit" / "install.py"
        spec = importlib.util.spec_from_file_location("ext_install", installer)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        specs = [requirement for _, requirement in module.REQUIREMENTS]
    pins = pinned(host.requirements())
    pins["torch"] = "2.1.2"
    clashes = []
    for requirement in (Requirement(s) for s in specs if s):
        version = pins.get(re.sub(r"[-_.]+", "-", requirement.name).lower())
        if version is not None and not requirement.specifier.contains(version, prereleases=True):
            clashes.append(f"{requirement} (the webui pins {version})")
    assert not clashes
