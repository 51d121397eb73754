"""The package's folders are its layers, and each layer imports only what its rule allows.

* ``core``: neither Airflow nor any other backup-ops layer;
* ``adapters``: the core (and Airflow's hooks and connections), never backup-ops' task code or the CLI;
* ``airflow``: the core and the adapters, never the CLI;
* DAG files: only the Airflow side and the config.

Every import statement counts, including the lazy ones inside functions, since a lazy import is
still a dependency. The last test imports every core and adapter module in a fresh interpreter
and checks that none of them loads Airflow or a heavy library merely by being imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "plugins" / "backup_ops"
LAYERS = ("core", "adapters", "airflow", "cli")
# What each part of the package may not import (prefix match on dotted module names).
FORBIDDEN = {
    "core": ("airflow", "backup_ops.adapters", "backup_ops.airflow", "backup_ops.cli"),
    "adapters": ("backup_ops.airflow", "backup_ops.cli"),
    "airflow": ("backup_ops.cli",),
    "cli": (),
}
DAG_FILES_MAY_IMPORT = ("backup_ops.airflow", "backup_ops.core.config")
HEAVY = ("airflow", "pyzipper", "boto3", "botocore", "psycopg", "great_expectations", "pandas")


def module_name(path: Path, plugins: Path = ROOT / "plugins") -> str:
    parts = path.relative_to(plugins).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported_modules(path: Path, plugins: Path = ROOT / "plugins") -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every module an import statement in ``path`` names, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path, plugins) if path.is_relative_to(plugins) else path.stem
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # ``from backup_ops import cli`` imports a module too
                yield node.lineno, f"{base}.{alias.name}"


def layer_of(path: Path) -> str | None:
    relative = path.relative_to(PACKAGE).parts
    return relative[0] if len(relative) > 1 else None


def violations(path: Path, forbidden: tuple[str, ...], plugins: Path = ROOT / "plugins") -> list[str]:
    found = []
    for line, name in imported_modules(path, plugins):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden):
            found.append(f"{path.relative_to(plugins)}:{line} imports {name}")
    return found


def test_every_module_lives_in_a_layer() -> None:
    top_level = {p.name for p in PACKAGE.glob("*.py")}
    assert top_level == {"__init__.py", "__main__.py"}, "new modules belong in core/, adapters/, airflow/ or cli/"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_what_its_rule_allows(layer: str) -> None:
    modules = [p for p in package_modules() if layer_of(p) == layer]
    assert modules, f"no modules found in {layer}/"
    problems = [v for path in modules for v in violations(path, FORBIDDEN[layer])]
    assert problems == []


def test_dag_files_import_only_the_airflow_side_and_the_config() -> None:
    dag_files = sorted((ROOT / "dags").glob("*.py"))
    assert dag_files
    problems = []
    for path in dag_files:
        for line, name in imported_modules(path):
            if name.split(".")[0] == "backup_ops" and not any(
                name == allowed or name.startswith(allowed + ".") for allowed in DAG_FILES_MAY_IMPORT
            ):
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert problems == []


def test_the_rule_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    fake = tmp_path / "backup_ops" / "core" / "sample.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from airflow.sdk import Connection\n    from ..adapters import mail\n")
    names = [name for _, name in imported_modules(fake, plugins=tmp_path)]
    assert "airflow.sdk" in names
    assert "backup_ops.adapters.mail" in names
    assert violations(fake, FORBIDDEN["core"], plugins=tmp_path)


def test_importing_core_and_adapters_loads_no_airflow_and_no_heavy_library() -> None:
    names = [module_name(p) for p in package_modules() if layer_of(p) in ("core", "adapters")]
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in names)
        + f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        + "assert not loaded, loaded[:8]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "plugins", capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
