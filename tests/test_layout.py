"""The shape of course_utils a newcomer reads: small modules, no import cycle, a plain NF4 reference."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "course_utils"
MAX_LINES = 350


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """course_utils modules imported when this module is imported (imports inside functions run later: not counted)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    nodes = list(ast.parse(path.read_text()).body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, (ast.If, ast.Try)):
            nodes += node.body + node.orelse + getattr(node, "finalbody", []) + \
                [n for h in getattr(node, "handlers", []) for n in h.body]
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("course_utils")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("course_utils"):
                found.add(mod)
                found |= {f"{mod}.{a.name}" for a in node.names}  # `from . import x` imports the submodule x
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in top_level_imports(p) if i in modules and i != m} for m, p in modules.items()}


def test_no_module_is_longer_than_a_sitting():
    long = {str(p.relative_to(PKG.parent)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by idea): {long}"


def test_no_import_cycle():
    g = graph()
    # a package importing its own submodules is how re-exports work; a cycle is a submodule importing back
    # something that (directly or not) imports it, other than through its parent package's __init__
    edges = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in g.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(edges[m]):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_the_nf4_reference_is_plain_torch():
    imports = top_level_imports(PKG / "nf4" / "reference.py")
    text = (PKG / "nf4" / "reference.py").read_text()
    assert not imports, f"nf4/reference.py imports other course modules: {imports}"
    for word in ("threading", "concurrent", "ctypes", "native", "ThreadPool"):
        assert word not in text, f"nf4/reference.py mentions {word!r}: the reference stays plain torch"
