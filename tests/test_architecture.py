"""The layering docs/architecture.md states, checked on the source: a method package imports shared kinds,
never another method, and no shared module imports a method package (the bundles reach methods through
their configs)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "common" / "cellzoo"
METHODS = sorted(p.name for p in (PACKAGE / "methods").iterdir() if (p / "__init__.py").is_file())


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def method_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if parts[:2] == ["cellzoo", "methods"] and len(parts) > 2 else None


def test_the_five_method_packages_are_found():
    assert METHODS == ["cupre", "isl", "mediar", "pmc", "unetr"]


def test_method_packages_never_import_each_other():
    crossings = [f"{path.relative_to(PACKAGE)} imports {module}"
                 for method in METHODS for path in (PACKAGE / "methods" / method).rglob("*.py")
                 for module in imported_modules(path) if method_of(module) not in (None, method)]
    assert not crossings, crossings


def test_shared_kinds_never_import_a_method_package():
    shared = [p for p in PACKAGE.rglob("*.py") if "methods" not in p.relative_to(PACKAGE).parts]
    crossings = [f"{path.relative_to(PACKAGE)} imports {module}" for path in shared
                 for module in imported_modules(path) if method_of(module) or module == "cellzoo.methods"]
    assert not crossings, crossings


# words of the bundle names that say what a bundle does, not which method it is
GENERIC_WORDS = {"instance", "seg", "segmentation", "detection", "cellseg"}
METHOD_WORDS = set(METHODS) | {word for bundle in (PACKAGE.parents[1] / "bundles").iterdir() if bundle.is_dir()
                               for word in bundle.name.split("_")} - GENERIC_WORDS


def test_no_shared_module_is_named_after_a_method():
    """A method keeps its own code in its package; nothing outside it is named after a method or its bundle."""
    named = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
             if "methods" not in p.relative_to(PACKAGE).parts and set(p.stem.split("_")) & METHOD_WORDS]
    assert not named, named
