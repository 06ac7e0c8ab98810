"""The house rules of docs/architecture.md, checked on the source: the library never imports the CLI, and
no import cycle among the package's modules, imports for annotations (``TYPE_CHECKING``) included."""

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "infofusion"
# Command-line modules: they may import anything, nothing in the library imports them.
ENTRY_POINTS = {"infofusion.cli", "infofusion.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def all_nodes(tree: ast.AST):
    """Every node, those under ``if TYPE_CHECKING:`` too: a cycle through annotations is still two modules
    that each need the other to be understood."""
    yield from ast.walk(tree)


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Every infofusion module ``path`` imports, at module level or inside a function."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in all_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a import b` imports the module a.b when there is one, else a name of a.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = source_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def test_the_library_never_imports_the_cli():
    importers = sorted(
        name
        for name, imports in import_graph().items()
        if "infofusion.cli" in imports and name not in ENTRY_POINTS
    )
    assert importers == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_the_modules():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


IMPORT_EACH_FIRST = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "infofusion" or m.startswith("infofusion.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as error:
        failed.append(f"{name}: {type(error).__name__}: {error}")
print("\\n".join(failed))
"""


def test_every_module_imports_as_the_first_one():
    """The graph above cannot see a package's ``__init__`` run before its module: importing
    ``text.encoders`` first once ran ``data/__init__``, which imported ``text.encoders`` half-made."""
    import subprocess
    import sys

    names = [name for name in source_files() if name != "infofusion.__main__"]
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_FIRST, *names], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""
