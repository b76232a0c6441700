"""Read the code a student wrote (answer cells, cells they added) before it runs, and refuse what games the grade.

Three kinds of finding:
- "reference": the answer uses the course module it is graded against (`from course_utils.memory import
  full_finetune_bytes`, `import course_utils.lora`, a name a provided cell imported from it). That answer is
  scored as not answered.
- "tamper": the answer reaches for what decides a verdict instead of computing an answer: IPython's shell,
  hooks and transformers, tracing and frames, the builtins, dynamic code (exec/eval/compile/__import__),
  monkeypatching a module or a course function, magic methods that make any comparison succeed, threads,
  signals and finalizers that run code while a test runs. That answer is not run and the submission is flagged.
- "shadow": a cell the student added rebinds what a provided cell computed (`measured = predicted`): not run.

What is not refused here is contained by the sandbox (files, processes, network) or seen by the probe after each
cell (probe.py). Honest answers to the labs need none of this; the lab text says so.
"""
from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass

from .labs import Lab

BANNED_NAMES = {"get_ipython", "__builtins__", "__builtin__", "__import__", "exec", "eval", "compile", "globals",
                "locals", "vars", "breakpoint", "In", "Out", "_ih", "_oh", "_dh", "_i", "_ii", "_iii", "exit", "quit",
                "__loader__", "__spec__"}
BANNED_MODULES = {"IPython", "ipykernel", "jupyter_client", "jupyter_core", "zmq", "traitlets", "comm", "builtins",
                  "importlib", "ctypes", "cffi", "gc", "inspect", "threading", "_thread", "multiprocessing",
                  "concurrent", "asyncio", "signal", "weakref", "linecache", "traceback", "code", "codeop",
                  "runpy", "pickle", "marshal", "dill", "dis", "faulthandler", "atexit", "nbformat", "nbgrader",
                  "nbclient", "debugpy", "pdb", "sys.monitoring", "pkgutil", "pydoc", "unittest", "imp", "zipimport"}
BANNED_ATTRS = {"events", "input_transformers_cleanup", "input_transformers_post", "ast_transformers",
                "set_custom_exc", "CustomTB", "custom_exceptions", "showtraceback", "_showtraceback", "run_cell",
                "run_cell_async", "transform_cell", "user_expressions", "user_ns", "user_global_ns", "do_execute",
                "displayhook", "excepthook", "breakpointhook", "display_pub", "settrace", "setprofile", "_getframe",
                "_current_frames", "f_globals", "f_locals", "f_back", "f_builtins", "f_code", "tb_frame",
                "gi_frame", "cr_frame", "ag_frame", "meta_path", "path_hooks", "path_importer_cache",
                "addaudithook", "_ip", "monitoring", "get_ipython", "attrgetter", "methodcaller", "import_module", "resolve_name"}
ALLOWED_DUNDER_ATTRS = {"__init__", "__name__", "__doc__", "__qualname__", "__version__"}
# magic methods that let an object answer any comparison, conversion or attribute lookup the tests make
BANNED_DEFS = {f"__{n}__" for n in (
    "eq ne lt le gt ge bool float int index complex abs round trunc floor ceil hash neg pos invert "
    "add sub mul truediv floordiv mod pow matmul and or xor lshift rshift divmod "
    "radd rsub rmul rtruediv rfloordiv rmod rpow rmatmul rand ror rxor rlshift rrshift rdivmod "
    "iadd isub imul itruediv ifloordiv imod ipow imatmul iand ior ixor ilshift irshift "
    "getattr getattribute setattr delattr dir del new init_subclass class_getitem set_name instancecheck "
    "subclasscheck subclasshook prepare torch_function torch_dispatch array array_ufunc array_function format "
    "get set delete reduce reduce_ex getstate setstate copy deepcopy").split()}
# builtins the tests' verdicts rely on: rebinding one at the top level of a cell changes every later test
CHECKING_BUILTINS = {"AssertionError", "isinstance", "issubclass", "abs", "len", "sum", "min", "max", "round",
                     "float", "int", "bool", "str", "repr", "tuple", "list", "dict", "set", "sorted", "range", "zip",
                     "any", "all", "print", "type", "super", "getattr", "hasattr", "Exception", "ValueError",
                     "RuntimeError", "TypeError", "KeyError", "NotImplementedError", "NameError", "object"}


@dataclass(frozen=True)
class Finding:
    kind: str          # reference | tamper
    message: str


def imports_of(sources) -> dict[str, str]:
    """name -> 'module' or 'module.attr' for every import in our own cells (setup, provided, tests)."""
    out: dict[str, str] = {}
    for src in sources:
        tree = _parse(src)
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, ast.Import):
                for a in node.names:
                    out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _parse(source: str):
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        source = TransformerManager().transform_cell(source)  # magics and !shell become get_ipython() calls
    except Exception:  # noqa: BLE001 - the kernel will report the same syntax error when it runs the cell
        pass
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def assigned_names(sources) -> set[str]:
    """Names our own cells (setup, provided) assign at their top level: what a test may compare with."""
    out = set()
    for src in sources:
        tree = _parse(src)
        for node in tree.body if tree else ():
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.With)):
                out |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return out


def screen(source: str, lab: Lab, provided_imports: dict[str, str], provided_names=frozenset(),
           shadow_check: bool = False) -> list[Finding]:
    """Findings for one student cell, most important first; empty when the cell may run as written.
    `provided_names`: variables our cells compute; a `global` of one is tampering, and with `shadow_check` (cells
    the student added) so is rebinding one at the top level."""
    tree = _parse(source)
    if tree is None:
        return []
    v = _Visitor(lab, provided_imports, set(provided_names), shadow_check)
    v.visit(tree)
    refs = [Finding("reference", m) for m in dict.fromkeys(v.reference)]
    return refs + [Finding("tamper", m) for m in dict.fromkeys(v.tamper)] + \
        [Finding("shadow", m) for m in dict.fromkeys(v.shadow)]


class _Visitor(ast.NodeVisitor):
    def __init__(self, lab: Lab, provided: dict[str, str], provided_names: set, shadow_check: bool):
        self.lab, self.provided = lab, provided
        self.provided_names, self.shadow_check, self.shadow = provided_names, shadow_check, []
        self.aliases = {k: v for k, v in provided.items()}   # name -> import path, ours and the student's
        self.reference: list[str] = []
        self.tamper: list[str] = []
        self.depth = 0                                       # 0: top level of the cell
        self.called: set[int] = set()                        # ids of nodes used as the function of a call

    # -- helpers
    def _is_reference(self, path: str) -> bool:
        return any(path == r or path.startswith(r + ".") for r in self.lab.reference)

    def _check_path(self, path: str, what: str) -> None:
        """`path` is a dotted import path the student's code reaches."""
        root = path.split(".")[0]
        if root in BANNED_MODULES or any(path == m or path.startswith(m + ".") for m in BANNED_MODULES):
            self.tamper.append(f"imports {root}, which can change how the notebook is run and graded")
        last = path.rsplit(".", 1)[-1]
        if self._is_reference(path):
            if path in self.lab.reference or last in self.lab.off_limits or path.endswith(".*"):
                self.reference.append(f"{what} {path}, the reference this lab is graded against")
        elif path.startswith("course_utils") and last in self.lab.off_limits:
            self.reference.append(f"{what} {path}, the reference this lab is graded against")

    def _rebinds(self, name: str, line: int, path: str | None = None) -> None:
        if self.depth:
            return
        if self.shadow_check and name in self.provided_names:
            self.shadow.append(f"rebinds {name} (line {line}), which a provided cell computes")
        if name in self.provided and path != self.provided[name]:
            self.tamper.append(f"rebinds {name} (line {line}), which the notebook's tests rely on")
        elif name in CHECKING_BUILTINS and hasattr(builtins, name):
            self.tamper.append(f"rebinds the builtin {name} (line {line}), which the tests rely on")

    def _root(self, node):
        while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
            node = node.func if isinstance(node, ast.Call) else node.value
        return node

    def _chain(self, node) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.aliases:
            return None
        return ".".join([self.aliases[node.id], *reversed(parts)])

    # -- imports
    def visit_Import(self, node):
        for a in node.names:
            self._check_path(a.name, "imports")
            name = a.asname or a.name.split(".")[0]
            path = a.name if a.asname else a.name.split(".")[0]
            self._rebinds(name, node.lineno, path)
            self.aliases[name] = path

    def visit_ImportFrom(self, node):
        mod = node.module or ""
        for a in node.names:
            path = f"{mod}.{a.name}" if mod else a.name
            self._check_path(path if a.name != "*" else f"{mod}.*", "imports")
            if node.level == 0:
                self._rebinds(a.asname or a.name, node.lineno, path)
                self.aliases[a.asname or a.name] = path

    # -- names and attributes
    def visit_Name(self, node):
        if node.id.startswith("_i") and node.id[2:].isdigit():  # IPython's input history: _i1, _i2, ...
            self.tamper.append(f"reads {node.id}, the source of an earlier cell")
        if node.id in ("getattr", "setattr", "delattr") and id(node) not in self.called:
            self.tamper.append(f"passes {node.id} around instead of calling it (line {node.lineno})")
        if node.id in BANNED_NAMES:
            self.tamper.append(f"uses {node.id}, which reaches the kernel or runs hidden code")
        if isinstance(node.ctx, ast.Load) and node.id in self.provided:
            path = self.provided[node.id]
            if self._is_reference(path) and path.rsplit(".", 1)[-1] in self.lab.off_limits:
                self.reference.append(f"uses {node.id} ({path}), the reference this lab is graded against")
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self._rebinds(node.id, node.lineno)

    def visit_Attribute(self, node):
        attr = node.attr
        if attr in BANNED_ATTRS:
            self.tamper.append(f"uses .{attr}, which reaches the kernel, its hooks or the interpreter's internals")
        elif attr.startswith("__") and attr.endswith("__") and attr not in ALLOWED_DUNDER_ATTRS:
            self.tamper.append(f"uses .{attr}, an object's internals")
        chain = self._chain(node)
        if chain:
            if chain == "sys.modules":
                self.tamper.append("uses sys.modules, which reaches every loaded module")
            self._check_path(chain, "uses")
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            root = self._root(node)
            if isinstance(root, ast.Name) and root.id in self.aliases:
                self.tamper.append(f"assigns to an attribute of {root.id} (line {node.lineno}): "
                                   "monkeypatching a module or a course object")
            elif not isinstance(root, ast.Name):
                self.tamper.append(f"assigns to an attribute of a computed object (line {node.lineno})")
        self.generic_visit(node)

    def visit_Call(self, node):
        f = node.func
        self.called.add(id(f))
        fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        if fname in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) > 1 and \
                not isinstance(node.args[1], ast.Constant):
            root = self._root(node.args[0])
            if isinstance(root, ast.Name) and self.aliases.get(root.id, "").startswith("course_utils"):
                self.tamper.append(f"looks up a name of {root.id} that it computes (line {node.lineno})")
        if fname in ("setattr", "delattr") and node.args:
            root = self._root(node.args[0])
            if isinstance(root, ast.Name) and root.id in self.aliases:
                self.tamper.append(f"calls {fname} on {root.id} (line {node.lineno}): monkeypatching a module")
        if fname in ("getattr", "setattr", "delattr", "hasattr") and len(node.args) > 1:
            key = node.args[1]
            if isinstance(key, ast.Constant) and isinstance(key.value, str) and \
                    (key.value in BANNED_ATTRS or key.value.startswith("__")):
                self.tamper.append(f"looks up .{key.value} by name (line {node.lineno})")
        if fname == "type" and len(node.args) == 3:
            self.tamper.append(f"creates a class with type(name, bases, dict) (line {node.lineno})")
        self.generic_visit(node)

    def visit_Constant(self, node):
        if isinstance(node.value, str) and node.value in BANNED_DEFS:
            self.tamper.append(f"names the magic method {node.value}")

    def visit_Assign(self, node):
        self.generic_visit(node)
        chain = node.value
        while isinstance(chain, (ast.Attribute, ast.Subscript)):  # `T = torch.Tensor` makes T a module alias
            chain = chain.value
        if isinstance(chain, ast.Name) and chain.id in self.aliases:
            for t in node.targets:
                if isinstance(t, ast.Name):
                    self.aliases[t.id] = self._chain(node.value) or self.aliases[chain.id]

    # -- definitions
    def _visit_def(self, node):
        if node.name in BANNED_DEFS:
            self.tamper.append(f"defines {node.name} (line {node.lineno}): an object that can make a comparison "
                               "succeed whatever its value")
        self._rebinds(node.name, node.lineno)
        for d in node.decorator_list:
            self.visit(d)
        self.depth += 1
        for child in ast.iter_child_nodes(node):
            if child not in node.decorator_list:
                self.visit(child)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_def

    def visit_ClassDef(self, node):
        self._visit_def(node)

    def visit_Lambda(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_Global(self, node):
        for name in node.names:
            if name in self.provided_names:
                self.tamper.append(f"declares `global {name}` (line {node.lineno}): {name} is computed by a "
                                   "provided cell and read by a test")
            depth, self.depth = self.depth, 0
            if name in self.provided or name in CHECKING_BUILTINS:
                self._rebinds(name, node.lineno)
            self.depth = depth
