"""The architecture, kept: dependencies point down the layers, no module imports in a circle, and
the project's own imports stand at the top of each module (only the command line imports its
workflows lazily, so `--help` stays fast). Every import statement is read, function-local included."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stylecap

PACKAGE = Path(stylecap.__file__).parent
BASE = {"stylecap", "stylecap.errors", "stylecap.paths", "stylecap.progress", "stylecap.options"}
# layer → the layers it may import (besides itself)
# Lazy imports of the project's own code that are there on purpose, each with its reason.
LAZY = {("stylecap.generate.local", "stylecap.core.lms"):
        "the local LLM provider needs torch: generate stays torch-free unless that provider is chosen"}
ALLOWED = {
    "base": {"base"},
    "core": {"base"},
    "workflows": {"base", "core"},
    "experiments": {"base", "core", "workflows", "world", "generate"},
    "generate": {"base", "core"},  # the local LLM provider loads LMs through the core's factory
    "world": {"base", "core"},
    "data": set(),
    "cli": {"base", "core", "workflows", "experiments", "generate", "world"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    if module in BASE:
        return "base"
    if module == "stylecap.__main__":
        return "cli"
    second = module.split(".")[1]
    if second in ("assets", "corpora", "prompts", "benchmarks"):
        return "data"
    return second


def project_imports(path: Path, module: str | None = None) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for each import of a stylecap module in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    type_checking = {id(n) for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                     for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("stylecap"):
                continue
            targets = [base] + [f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}")]
            found += [(target, node.lineno, id(node) in top_level) for target in targets]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top_level) for a in node.names if a.name.startswith("stylecap")]
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def edges() -> dict[str, set[str]]:
    graph = {}
    for module, path in all_modules().items():
        graph[module] = {target for target, _, _ in project_imports(path) if target != module}
    return graph


def test_every_module_has_a_layer():
    layers = {layer(module) for module in all_modules()}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{module} ({layer(module)}) imports {target} ({layer(target)})"
            for module, targets in graph.items() for target in targets
            if layer(target) != layer(module) and layer(target) not in ALLOWED[layer(module)]]


def test_dependencies_point_down_the_layers():
    wrong = upward_imports(edges())
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_in_a_circle():
    graph = edges()
    # a package importing its own submodules is how packages re-export; the cycle rule is for siblings
    graph = {m: {t for t in ts if not t.startswith(m + ".") and not m.startswith(t + ".")} for m, ts in graph.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" → ".join(stack[stack.index(target):] + [target]) if target in stack else target)
            elif target not in state:
                visit(target, stack + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_own_imports_stand_at_the_top_outside_the_command_line():
    hidden = [f"{module_name(path)}:{line} imports {target}"
              for path in PACKAGE.rglob("*.py") if layer(module_name(path)) != "cli"
              for target, line, top in project_imports(path)
              if not top and (module_name(path), target) not in LAZY]
    assert not hidden, "\n".join(hidden)


@pytest.mark.parametrize("forbidden", ["workflows", "experiments", "cli"])
def test_the_layer_check_sees_a_planted_upward_import(tmp_path, forbidden):
    """The check above can fail: an upward import in a core module is reported (the module is
    written beside the package, not into it, so parallel test runs never see it)."""
    planted = tmp_path / "planted.py"
    planted.write_text(f"from stylecap.{forbidden} import something\n")
    graph = {"stylecap.core._planted": {target for target, _, _ in project_imports(planted, "stylecap.core._planted")}}
    assert any(layer(target) == forbidden for target in graph["stylecap.core._planted"])
    assert upward_imports(graph)
