"""The package layout is the pipeline: each stage imports only the stages before it.

``analyzer.STAGES`` orders the packages; each package's docstring names, on its line
``May import: ...``, the packages it may import; the shared modules (``analyzer.SHARED``) are open
to every stage and import nothing else of the package. These tests read every module's imports
(function-level ones too) and hold the code, the docstrings and the order to each other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import analyzer

PACKAGE = Path(analyzer.__file__).resolve().parent
OUTSIDE = ("collect",)  # packages beside the pipeline
STAGES = analyzer.STAGES
SHARED = analyzer.SHARED


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, name: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module or name imported) for every import of module ``name``."""
    package = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out += [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return [(line, target) for line, target in out if target.split(".")[0] == "analyzer"]


def _room(dotted: str) -> str:
    """The package or shared module a dotted name lives in (``analyzer`` itself for
    ``__version__``)."""
    parts = dotted.split(".")
    rooms = (*STAGES, *SHARED, *OUTSIDE)
    return parts[1] if len(parts) > 1 and parts[1] in rooms else "analyzer"


def _declared(package: str) -> set[str]:
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())) or ""
    lines = doc.splitlines()
    found = [line for line in lines[:4] if line.startswith("May import:")]
    assert found, f"analyzer/{package}/__init__.py: no 'May import:' line in its first lines"
    words = set(re.findall(r"[a-z_]+", found[0].removeprefix("May import:")))
    return words & {*STAGES, *SHARED, *OUTSIDE}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_package_is_a_stage_and_every_flat_module_is_shared():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(STAGES) | set(OUTSIDE)
    flat = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert flat == set(SHARED)


@pytest.mark.parametrize("package", [*STAGES, *OUTSIDE])
def test_a_package_declares_only_earlier_stages(package):
    declared = _declared(package)
    if package in OUTSIDE:
        assert declared <= set(SHARED), f"{package} runs apart from the pipeline"
        return
    earlier = set(STAGES[: STAGES.index(package)]) | set(OUTSIDE if package == "api" else ())
    assert declared - set(SHARED) <= earlier, f"{package} declares a later stage"
    assert declared - set(SHARED) == earlier, (
        f"{package}'s docstring leaves out {earlier - declared}"
    )


def _reaching_back(name: str, source: str, is_package: bool = False) -> list[str]:
    """The imports of module ``name`` that its room may not make."""
    owner = _room(name + ".x")
    if owner == "analyzer":  # __init__ (lazy names) and __main__
        return []
    if owner in SHARED:
        allowed = set(SHARED)
    elif owner in OUTSIDE:
        allowed = _declared(owner) | {owner, "analyzer"}
    else:
        allowed = _declared(owner) | set(SHARED) | {owner, "analyzer"}
    return [
        f"{name}:{line} imports {target}"
        for line, target in _imports(source, name, is_package)
        if _room(target) not in allowed
    ]


def test_no_module_imports_a_later_stage():
    wrong = []
    for path in _modules():
        wrong += _reaching_back(_module_name(path), path.read_text(), path.name == "__init__.py")
    assert not wrong, "\n".join(wrong)


def test_each_public_name_is_defined_once_where_the_api_says():
    """(Commands of ``api/cli.py`` are named as users type them, not library names.)"""
    definitions: dict[str, list[str]] = {}
    for path in _modules():
        if _module_name(path) == "analyzer.api.cli":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                definitions.setdefault(node.name, []).append(_module_name(path))
    for name, module in analyzer.API.items():
        assert definitions.get(name) == [f"analyzer.{module}"], (name, definitions.get(name))
        assert getattr(analyzer, name).__module__ == f"analyzer.{module}"


def test_the_layout_check_sees_an_import_reaching_back():
    """The check is not vacuous: a reader importing a detector, a shared module importing a
    stage, the collector importing the pipeline and a lazy import inside a function are seen."""
    assert _reaching_back("analyzer.sources.pcap", "from ..detectors import REGISTRY\n") == [
        "analyzer.sources.pcap:1 imports analyzer.detectors.REGISTRY"
    ]
    assert _reaching_back("analyzer.schema", "from .flows.tables import FlowTables\n")
    assert _reaching_back("analyzer.collect.core", "from ..sources import sniff\n")
    late = "def f():\n    from ..outputs.report import text_report\n"
    assert _reaching_back("analyzer.kernel.explain", late) == [
        "analyzer.kernel.explain:2 imports analyzer.outputs.report.text_report"
    ]
    assert not _reaching_back("analyzer.outputs.report", "from ..kernel.lookup import route_get\n")
