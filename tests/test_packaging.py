"""The installed package layout (setup.cfg): every package folder is installed, and the kernels
folder under its own import name, never as a top-level ``kernels``."""

from __future__ import annotations

import configparser
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The import name the kernels/ folder installs under (setup.cfg package_dir).
KERNELS_IMPORT_NAME = "kiclip_kernels"


def _options() -> configparser.SectionProxy:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg["options"]


def _listed(key: str) -> list[str]:
    return [line.strip() for line in _options()[key].splitlines() if line.strip()]


def test_every_package_folder_is_installed():
    renamed = {"kernels": KERNELS_IMPORT_NAME}
    folders = []
    for init in sorted(ROOT.glob("*/**/__init__.py")):
        parts = init.parent.relative_to(ROOT).parts
        if parts[0] in ("kiclip", "kernels", "shard_tools"):
            folders.append(".".join([renamed.get(parts[0], parts[0]), *parts[1:]]))
    assert sorted(folders) == sorted(_listed("packages"))


def test_kernels_install_under_their_own_name():
    assert _listed("package_dir") == [f"{KERNELS_IMPORT_NAME} = kernels"]
    spec = importlib.util.find_spec(KERNELS_IMPORT_NAME)
    assert spec is not None and Path(spec.origin).resolve() == ROOT / "kernels" / "__init__.py"


def test_no_code_imports_a_top_level_kernels_package():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("import kernels", "from kernels ", "from kernels.")):
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert not offenders
