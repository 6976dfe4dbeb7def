"""The package design holds: the headless packages load no textual, and the import-linter contracts in
pyproject.toml (`make lint`) really break on a forbidden import."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cortex_node", "cortex_tui")

# Contract names from [tool.importlinter] in pyproject.toml.
LAYERS = "cortex_node layers, cli down to contracts"
A2A_NOT_SWARM = "cortex_node.a2a never imports cortex_node.swarm"
TUI_CLIENT_HEADLESS = "cortex_tui.client imports no textual"

HEADLESS_MODULES = (
    "cortex_node.app",
    "cortex_node.cli.swarm",
    "cortex_node.cli.node",
    "cortex_node.cli.demo",
    "cortex_node.cli.render",
    "cortex_node.cli.client",
    "cortex_tui.client.config",
    "cortex_tui.client.demo",
    "cortex_tui.client.models",
    "cortex_tui.client.rest",
    "cortex_tui.client.series",
    "cortex_tui.client.source",
)


def test_headless_packages_load_no_textual() -> None:
    code = (
        f"import {', '.join(HEADLESS_MODULES)}; import sys; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'textual_plotext')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"a headless module loads textual: {out.stdout}"


def lint_imports_command() -> str:
    exe = Path(sys.executable).with_name("lint-imports")
    return str(exe) if exe.exists() else shutil.which("lint-imports") or pytest.fail("lint-imports is not installed")


def copy_tree(dest: Path) -> Path:
    """The two packages (.py files only) and pyproject.toml, away from the checkout."""
    for package in PACKAGES:
        for src in (ROOT / package).rglob("*.py"):
            if "__pycache__" in src.parts:
                continue
            target = dest / src.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
    shutil.copyfile(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports builds its graph from sys.path; cwd and PYTHONPATH put the copy ahead of the
    # editable install of the checkout (whose finder comes after the path entries).
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [lint_imports_command(), "--no-cache", "--no-logo", str(tree / "pyproject.toml")],
        cwd=tree, env=env, capture_output=True, text=True, timeout=60,
    )


def test_contracts_hold_on_the_unmodified_copy(tmp_path: Path) -> None:
    out = lint_imports(copy_tree(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken", out.stdout), out.stdout


@pytest.mark.parametrize(
    "module, imported, broken",
    [
        ("cortex_node/a2a/wire.py", "cortex_node.swarm", (A2A_NOT_SWARM, LAYERS)),
        ("cortex_tui/client/models.py", "textual", (TUI_CLIENT_HEADLESS,)),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, imported: str, broken: tuple[str, ...]
) -> None:
    tree = copy_tree(tmp_path)
    with (tree / module).open("a") as f:
        f.write(f"\nimport {imported}  # the forbidden import of test_layers.py\n")
    out = lint_imports(tree)
    assert out.returncode != 0, out.stdout + out.stderr
    for name in broken:
        assert f"{name} BROKEN" in out.stdout, out.stdout + out.stderr
    importer = module.removesuffix(".py").replace("/", ".")
    assert re.search(rf"{re.escape(importer)} -> {re.escape(imported)} \(l\.\d+\)", out.stdout), out.stdout
