"""The documented install step on a fake webui folder: `python -m unlearnkit install-webui PATH`, the
extension's own install.py (with a labelled stand-in of the webui's `launch` module), and the panel's
script loading from the installed folder the way the webui loads scripts (by path, not in sys.modules)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unlearnkit import cli
from unlearnkit.cli import install_webui as webui_install

ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "extensions" / "sd-webui-unlearnkit"
SITE = [p for p in sys.path if p.endswith("site-packages")]


@pytest.fixture()
def webui(tmp_path):
    """A fake webui checkout: the files install-webui checks for and the folders the webui has."""
    root = tmp_path / "stable-diffusion-webui"
    (root / "extensions").mkdir(parents=True)
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    (root / "launch.py").write_text("# stand-in\n")
    return root


def load_like_webui(script: Path) -> str:
    """Load the script in a fresh python without site .pth files (so no editable install of the core is
    visible), as modules/script_loading.load_module does; report where `unlearnkit` came from."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('unlearnkit_script.py', {str(script)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "import unlearnkit.webui\n"
        "print(json.dumps({'core': list(unlearnkit.webui.__path__)[0], 'script': "
        "module.UnlearnKitScript().title()}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(SITE), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, cwd="/", timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["core"]


def test_install_links_the_extension_and_the_script_finds_the_core(webui, capsys):
    assert cli.main(["install-webui", str(webui)]) == 0
    target = webui / "extensions" / "sd-webui-unlearnkit"
    assert target.is_symlink() and target.resolve() == EXT.resolve()
    assert all((webui / "models" / f).is_dir() for f in webui_install.MODEL_FOLDERS)
    assert "Restart the webui" in capsys.readouterr().out
    assert cli.main(["install-webui", str(webui)]) == 0  # idempotent
    core = load_like_webui(target / "scripts" / "unlearnkit_script.py")
    assert Path(core).resolve() == (ROOT / "unlearnkit" / "webui").resolve()


def test_copy_vendors_the_core_and_refuses_to_overwrite_without_force(webui):
    webui_install.install(webui)
    with pytest.raises(FileExistsError, match="--force"):
        webui_install.install(webui, copy=True)
    target = webui_install.install(webui, copy=True, force=True)
    assert not target.is_symlink() and (target / "unlearnkit" / "webui" / "settings.py").is_file()
    assert not (target / "unlearnkit" / "tinyworld" / "weights").exists()
    core = load_like_webui(target / "scripts" / "unlearnkit_script.py")
    assert Path(core).resolve() == (target / "unlearnkit" / "webui").resolve()


def test_refuses_a_folder_that_is_not_a_webui(tmp_path):
    with pytest.raises(ValueError, match="WEBUI_DIR"):
        webui_install.install(tmp_path)


class StandInLaunch:
    """Labelled stand-in of the webui's `launch` module: is_installed / run_pip, recording pip calls."""

    def __init__(self, installed):
        self.installed, self.pip = set(installed), []

    def is_installed(self, name):
        return name in self.installed

    def run_pip(self, command, desc=None):
        self.pip.append(command)


def load_installer():
    spec = importlib.util.spec_from_file_location("unlearnkit_ext_install", EXT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_extension_installer_uses_the_webui_conventions_and_installs_only_what_is_missing():
    installer = load_installer()
    launch = StandInLaunch({"numpy", "pillow", "safetensors"})
    assert installer.main(launch) == 0 and launch.pip == []
    launch = StandInLaunch({"numpy", "pillow"})
    assert installer.main(launch) == 0
    assert launch.pip == ['install "safetensors>=0.4"']
