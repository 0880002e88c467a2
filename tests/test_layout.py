"""The package's shape: light imports and downward-only layers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "pandas",
    "matplotlib",
    "openai",
    "fastapi",
    "torch",
    "transformers",
    "pyarrow",
    "numpy",
    "inspect_ai",
)


def _imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_importing_the_package_loads_no_heavy_dependency() -> None:
    loaded = _imported_after("import persona_collapse")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_public_names_resolve_lazily() -> None:
    import persona_collapse

    for name in persona_collapse.__all__:
        assert getattr(persona_collapse, name) is not None, name
    assert set(persona_collapse.__all__) <= set(dir(persona_collapse))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        persona_collapse.nonexistent  # noqa: B018


def test_public_api_is_consistent_and_covers_the_newer_analyses() -> None:
    """Every lazily exported name is in ``__all__``, imported under TYPE_CHECKING (so
    static checkers see it) and is the object its module defines; the entry points the
    newer CLI commands call are exported."""
    import ast
    import importlib

    import persona_collapse

    exports: dict[str, str] = persona_collapse._EXPORTS
    assert set(persona_collapse.__all__) == {*exports, "__version__"}
    assert len(persona_collapse.__all__) == len(set(persona_collapse.__all__))
    tree = ast.parse((REPO_ROOT / "src" / "persona_collapse" / "__init__.py").read_text())
    checked = {
        (node.module, alias.name)
        for block in tree.body
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for node in ast.walk(block)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert checked == {(module, name) for name, module in exports.items()}
    for name, module in exports.items():
        assert getattr(persona_collapse, name) is getattr(importlib.import_module(module), name)
    newer = {
        "capability_metrics", "lookup_metrics", "variant_delta", "analyse_controls", "bfi44",
        "compare_instruments", "analyze_trajectory", "analyse_geometry", "excess_pr",
        "analyse_study_geometry", "run_sensitivity", "analyze_sensitivity",
        "study_sensitivity", "watch_checkpoints", "watch_openai_checkpoints",
        "corrected_fields", "ESTIMATES_EXPLANATION",
    }  # fmt: skip
    assert newer <= set(persona_collapse.__all__), sorted(newer - set(persona_collapse.__all__))


@pytest.mark.parametrize("argv", [["--help"], ["metrics", "--help"], ["study", "run", "--help"]])
def test_help_screens_load_no_heavy_dependency(argv: list[str]) -> None:
    code = f"from persona_collapse.cli import main\ncode = main({argv!r})\nassert code == 0, code"
    loaded = _imported_after(code)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_layer_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([lint], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:]


def test_no_code_outside_backends_branches_on_a_backend_name() -> None:
    """Backends describe themselves (model option, endpoint, key, context options);
    nothing outside ``backends/`` may compare a kind with a backend's name."""
    import ast

    from persona_collapse.backends import BUILTIN_BACKENDS

    names = set(BUILTIN_BACKENDS)
    package = REPO_ROOT / "src" / "persona_collapse"
    found = []
    for path in package.rglob("*.py"):
        if path.is_relative_to(package / "backends"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            # Fine-tuning platforms ("local", "openai") are not backend kinds.
            if any(isinstance(o, ast.Attribute) and o.attr == "platform" for o in operands):
                continue
            for operand in operands:
                if isinstance(operand, ast.Constant) and operand.value in names:
                    found.append(f"{path.relative_to(package)}:{node.lineno}")
    assert not found, found
