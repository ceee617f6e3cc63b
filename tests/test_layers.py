"""The layers point one way: tools on top of tasks, tasks on top of the engine and the models.

Every ``import`` in litvit (at module level or inside a function) is read from the source and
checked against the layers of the importing and the imported module, so a model module that
reaches for a task, or one tool that builds on another, fails here rather than in review.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "litvit"
TASK_PACKAGES = ("classification", "detection", "segmentation", "viz", "synthetic")
# Bottom to top. "base": models, ops, checkpoints, the factory, litvit.graph, files, errors.
# "cli": a task's command line; "tool": benchmark, export, the demos, info; "dispatch": litvit.cli.
LAYERS = {"base": 0, "engine": 1, "task": 2, "cli": 3, "tool": 3, "dispatch": 4}


def module_files(package: Path = PACKAGE) -> Dict[str, Path]:
    """``{"litvit.engine.amp": path, ...}`` for every module of the package."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def tool_of(module: str) -> str:
    """The tool ``module`` belongs to, '' for none: ``litvit.export.cli`` -> 'export'."""
    parts = module.split(".")[1:]
    if parts and parts[-1] == "demo":
        return "demo"
    if parts and parts[0] in ("benchmark", "benchmark_cli"):
        return "benchmark"
    if parts and parts[0] in ("export", "info"):
        return parts[0]
    return ""


def layer_of(module: str) -> str:
    parts = module.split(".")[1:]
    if parts in (["cli"], ["__main__"]):
        return "dispatch"
    if tool_of(module):
        return "tool"
    if parts and parts[-1] == "cli":
        return "cli"
    if parts and parts[0] in TASK_PACKAGES:
        return "task"
    if parts and parts[0] == "engine":
        return "engine"
    return "base"


def imports(module: str, source: str, modules: Dict[str, Path]) -> Iterator[Tuple[str, int]]:
    """The litvit modules that ``source`` (the text of ``module``) imports, with their lines."""
    is_package = modules[module].name == "__init__.py"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                target = ".".join(base + ([node.module] if node.module else []))
            # `from pkg import sub` imports the submodule when there is one.
            targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
        else:
            continue
        for target in targets:
            if target == "litvit" or target.startswith("litvit."):
                while target not in modules:  # an attribute path: the module that holds it
                    target = target.rsplit(".", 1)[0]
                yield target, node.lineno


def violations(sources: Dict[str, str], modules: Dict[str, Path]) -> List[str]:
    found = []
    for module, source in sources.items():
        layer = layer_of(module)
        for target, line in imports(module, source, modules):
            where = f"{module}:{line} imports {target}"
            target_layer = layer_of(target)
            if LAYERS[target_layer] > LAYERS[layer]:
                found.append(f"{where}: {layer} on top of {target_layer}")
            elif target_layer == "tool" and layer != "dispatch" and tool_of(target) != tool_of(module):
                found.append(f"{where}: one tool on another")
    return found


def test_every_import_points_down_the_layers():
    modules = module_files()
    sources = {name: path.read_text(encoding="utf-8") for name, path in modules.items()}
    assert violations(sources, modules) == []


def test_the_check_catches_an_import_that_points_up():
    modules = module_files()
    bad = {
        # a lazy import inside a function counts too
        "litvit.models.lit": "def f():\n    from ..export import export_model\n",
        "litvit.engine.amp": "from ..classification import train\n",
        "litvit.benchmark.runtimes": "from .. import export\n",
        "litvit.detection.models": "import litvit.demo\n",
    }
    found = violations(bad, modules)
    assert found == [
        "litvit.models.lit:2 imports litvit.export: base on top of tool",
        "litvit.engine.amp:1 imports litvit.classification.train: engine on top of task",
        "litvit.benchmark.runtimes:1 imports litvit.export: one tool on another",
        "litvit.detection.models:1 imports litvit.demo: task on top of tool",
    ]
    # Down the layers is fine: a task on the engine, a tool on a task, the benchmark on litvit.graph.
    good = {
        "litvit.detection.training": "from ..engine import amp\nfrom ..models import LIT\n",
        "litvit.export.tasks": "def f():\n    from ..detection.export import detector_for_export\n",
        "litvit.benchmark.runtimes": "def f():\n    from .. import graph\n",
    }
    assert violations(good, modules) == []
