"""The integrity check the grader runs in the kernel after every cell, and how its answers are compared.

It is evaluated through `user_expressions` of an empty, silent execute request: no input transformer sees it, no
pre/post_run_cell hook fires for it. It reports what a submission would have to change to fake a passing test:
IPython event hooks, input/AST transformers, custom exception handlers, trace/profile functions, sys hooks and
import hooks, overrides of the shell's and kernel's execution methods, and the identity of every course function,
of the builtins and of the torch functions the tests compare with. For the lab's graded names it also says
whether the object is, subclasses, or calls into a reference module.

A kernel is the student's process, so this cannot be proof against everything (the static screen, see
screen.py, refuses the code that would be needed to fake it); it catches what the screen cannot see.
"""
from __future__ import annotations

import ast
import json
import secrets

_SOURCE = r'''
def _grader_probe(nonce, graded, references, off_limits, protected=()):
    import builtins, functools, json, sys, types
    ip = __import__("IPython").get_ipython()

    def ident(f):
        f = getattr(f, "__func__", f)
        return "%s:%s" % (getattr(f, "__module__", None) or type(f).__module__,
                          getattr(f, "__qualname__", None) or type(f).__qualname__)

    def table(obj, names=None):
        out = {}
        for k in (names or list(vars(obj))):
            v = vars(obj).get(k) if isinstance(vars(obj), dict) else None
            if v is None or k.startswith("__") and k not in ("__call__", "__eq__", "__init__"):
                continue
            if callable(v) or isinstance(v, (type, staticmethod, classmethod)):
                out[k] = id(v)
                code = getattr(getattr(v, "__func__", v), "__code__", None)
                if code is not None:
                    out[k + "#code"] = id(code)
        return out

    ids = {}
    for name, mod in list(sys.modules.items()):
        if mod is not None and (name == "course_utils" or name.startswith("course_utils.")):
            for k, v in table(mod).items():
                ids[name + "." + k] = v
    for k, v in table(builtins, ["abs", "all", "any", "isinstance", "issubclass", "len", "sum", "min", "max",
            "round", "float", "int", "bool", "str", "repr", "print", "tuple", "list", "dict", "set", "sorted",
            "range", "zip", "map", "getattr", "hasattr", "setattr", "type", "super", "eval", "exec", "compile",
            "__import__", "AssertionError", "Exception", "BaseException", "NameError", "ValueError",
            "RuntimeError", "TypeError", "KeyError", "NotImplementedError", "object", "id", "iter", "next",
            "enumerate", "callable", "isinstance", "open"]).items():
        ids["builtins." + k] = v
    torch = sys.modules.get("torch")
    if torch is not None:
        for k, v in table(torch, ["allclose", "equal", "isclose", "is_tensor", "as_tensor", "tensor"]).items():
            ids["torch." + k] = v
        for k, v in table(torch.Tensor, ["__eq__", "allclose", "equal", "item", "tolist", "abs", "max", "sum",
                                         "__bool__", "__float__", "__sub__", "__getitem__"]).items():
            ids["torch.Tensor." + k] = v
        for k, v in table(torch.nn.Module, ["__call__", "_call_impl", "parameters", "named_modules"]).items():
            ids["torch.nn.Module." + k] = v
    for cls in {type(ip), *type(ip).__mro__[:3], type(getattr(ip, "kernel", None))}:
        for k in ("run_cell", "run_cell_async", "_run_cell", "transform_cell", "run_ast_nodes", "run_code",
                  "user_expressions", "showtraceback", "_showtraceback", "do_execute", "execute_request",
                  "send_response", "_publish_execute_input"):
            v = vars(cls).get(k) if cls is not None else None
            if v is not None:
                ids["%s.%s" % (cls.__qualname__, k)] = id(v)
    for k in protected:  # what our cells imported into the notebook's namespace, and the modules among it
        if k in ip.user_ns:
            v = ip.user_ns[k]
            ids["user." + k] = id(v)
            if isinstance(v, types.ModuleType) and not v.__name__.split(".")[0] in ("torch", "course_utils"):
                for a, i in table(v).items():
                    ids["%s.%s" % (v.__name__, a)] = i
    overrides = sorted(k for k in ("run_cell", "run_cell_async", "_run_cell", "transform_cell", "run_ast_nodes",
                                   "run_code", "user_expressions", "showtraceback", "_showtraceback", "CustomTB")
                       if k in vars(ip))
    kernel = getattr(ip, "kernel", None)
    if kernel is not None:
        overrides += sorted("kernel." + k for k in ("do_execute", "execute_request", "send_response")
                            if k in vars(kernel))

    def reaches(obj, depth=0, seen=None):
        seen = set() if seen is None else seen
        if id(obj) in seen or depth > 3:
            return None
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            return reaches(obj.func, depth + 1, seen)
        obj = getattr(obj, "__func__", obj)
        mod = obj.__name__ if isinstance(obj, types.ModuleType) else (getattr(obj, "__module__", None) or "")
        if isinstance(mod, str) and any(mod == r or mod.startswith(r + ".") for r in references):
            if isinstance(obj, types.ModuleType):
                return mod
            qual = getattr(obj, "__qualname__", "") or ""
            if qual.split(".")[0] in off_limits:
                return "%s.%s" % (mod, qual)
            return None
        if isinstance(obj, (list, tuple, set, frozenset, dict)):
            items = list(obj.values()) + list(obj) if isinstance(obj, dict) else list(obj)
            for v in items[:100]:
                hit = reaches(v, depth + 1, seen)
                if hit:
                    return hit
            return None
        if mod != "__main__":  # a library's object: only the student's own code is followed further
            return None
        if isinstance(obj, type):
            for base in obj.__mro__[1:]:
                hit = reaches(base, depth + 1, seen)
                if hit:
                    return hit
            for v in list(vars(obj).values()):
                hit = reaches(getattr(v, "fget", None) or getattr(v, "__func__", v), depth + 1, seen)
                if hit:
                    return hit
        elif isinstance(obj, types.FunctionType):
            for v in list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values()):
                hit = reaches(v, depth + 1, seen)
                if hit:
                    return hit
            codes, names = [obj.__code__], set()
            while codes:
                c = codes.pop()
                names.update(c.co_names)
                codes += [k for k in c.co_consts if isinstance(k, types.CodeType)]
            for n in names:
                if n in obj.__globals__:
                    hit = reaches(obj.__globals__[n], depth + 1, seen)
                    if hit:
                        return hit
            for cell in obj.__closure__ or ():
                try:
                    hit = reaches(cell.cell_contents, depth + 1, seen)
                except ValueError:
                    continue
                if hit:
                    return hit
        return None

    ns = ip.user_ns
    answers = {g: reaches(ns[g]) for g in graded if g in ns and callable(ns[g])}
    tracker = sys.getprofile()
    calls = sorted(getattr(tracker, "hits", ())) if getattr(tracker, "grader_nonce", None) == nonce else []
    if tracker is not None and getattr(tracker, "grader_nonce", None) == nonce:
        sys.setprofile(None)
    report = {
        "nonce": nonce,
        "hooks": {ev: [ident(f) for f in cbs] for ev, cbs in ip.events.callbacks.items()},
        "transformers": [ident(t) for t in list(ip.input_transformers_cleanup) + list(ip.input_transformers_post)
                         + list(ip.ast_transformers)],
        "custom_exc": repr(getattr(ip, "custom_exceptions", ())),
        "tracing": [sys.gettrace() is not None, sys.getprofile() is not None],
        "sys_hooks": [ident(sys.displayhook), ident(sys.excepthook), ident(sys.breakpointhook),
                      [ident(type(f)) for f in sys.meta_path], [ident(f) for f in sys.path_hooks]],
        "overrides": overrides,
        "ids": ids,
        "answers": answers,
        "calls": calls,
    }
    return json.dumps(report)


def _grader_arm(nonce, graded, references, off_limits, mode):
    """While the next cell runs, note every call of an off-limits reference function that the student's code
    makes, however it found the function. mode "cell" (an answer or added cell): any call whose caller is not
    course code. mode "test": any call made while one of the student's graded functions is on the stack."""
    import sys, types
    ip = __import__("IPython").get_ipython()
    codes, todo = set(), [ip.user_ns[g] for g in graded if g in ip.user_ns]
    while todo:
        obj = todo.pop()
        obj = getattr(obj, "__func__", obj)
        if isinstance(obj, type) and obj.__module__ == "__main__":
            todo += list(vars(obj).values())
        elif isinstance(obj, types.FunctionType) and obj.__module__ == "__main__":
            stack = [obj.__code__]
            while stack:
                c = stack.pop()
                codes.add(c)
                stack += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    mods = [(n, m) for n, m in list(sys.modules.items()) if m is not None and n.split(".")[0] == "course_utils"]
    course_files = {getattr(m, "__file__", None) for n, m in mods} - {None}
    files = {getattr(m, "__file__", None) for n, m in mods
             if any(n == r or n.startswith(r + ".") for r in references)} - {None}

    def tracker(frame, event, arg):
        if event != "call" or frame.f_code.co_filename not in files:
            return
        if frame.f_code.co_qualname.split(".")[0] not in off_limits:
            return
        f = frame.f_back
        if mode == "cell":
            if f is not None and f.f_code.co_filename not in course_files:
                tracker.hits.add(frame.f_code.co_qualname)
            return
        for _ in range(30):
            if f is None:
                return
            if f.f_code in codes:
                tracker.hits.add(frame.f_code.co_qualname)
                return
            f = f.f_back

    tracker.hits, tracker.grader_nonce = set(), nonce
    if files and (codes or mode == "cell"):
        sys.setprofile(tracker)
    return nonce
'''

# Hooks our own cells may leave behind (plotting, widgets), and the one a library registers when a student's
# cell imports it (pyplot redraws figures after each cell); a student's cell may register no other.
TRUSTED_HOOK_MODULES = ("matplotlib", "ipykernel", "IPython", "ipywidgets", "comm")
LIBRARY_HOOK_MODULES = ("matplotlib.", "matplotlib_inline.")


def expression(graded=(), references=(), off_limits=(), nonce=None, arm=None, protected=()) -> tuple[str, str]:
    """(nonce, expression) for Kernel.probe: the report, or with `arm` ("cell" or "test") the call tracker for the
    next cell (the report that follows it must use the same nonce)."""
    nonce = nonce or secrets.token_hex(8)
    call = (f"g['_grader_arm']({nonce!r}, {list(graded)!r}, {list(references)!r}, {list(off_limits)!r}, {arm!r})"
            if arm else
            f"g['_grader_probe']({nonce!r}, {list(graded)!r}, {list(references)!r}, {list(off_limits)!r}, "
            f"{list(protected)!r})")
    expr = f"(lambda g: (exec({_SOURCE!r}, g), {call})[1])({{'__builtins__': __import__('builtins')}})"
    return nonce, expr


class Watch:
    """Compares each probe report with what the kernel looked like before student code could change it."""

    def __init__(self):
        self.base: dict | None = None

    def check(self, text: str | None, nonce: str, trusted: bool) -> list[str]:
        """Findings (empty: nothing changed). `trusted`: the cell that just ran is ours (setup/provided/test)."""
        try:
            report = json.loads(ast.literal_eval(text))  # the text/plain repr of the JSON string
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            report = None
        if not isinstance(report, dict) or report.get("nonce") != nonce:
            return ["the kernel did not answer the grader's integrity check"]
        if self.base is None:
            self.base = report
            return []
        base, found = self.base, []
        for ev, cbs in report["hooks"].items():
            for cb in cbs:
                if cb in base["hooks"].get(ev, []):
                    continue
                if cb.startswith(LIBRARY_HOOK_MODULES) or trusted and cb.startswith(TRUSTED_HOOK_MODULES):
                    base["hooks"].setdefault(ev, []).append(cb)
                else:
                    found.append(f"registered an IPython '{ev}' hook ({cb})")
        if report["transformers"] != base["transformers"]:
            found.append("added an input or AST transformer")
        if report["sys_hooks"] != base["sys_hooks"]:
            if trusted:  # libraries add import hooks when a provided cell first imports them
                base["sys_hooks"] = report["sys_hooks"]
            else:
                found.append("replaced a sys hook (displayhook, excepthook or an import hook)")
        for key, what in (("custom_exc", "installed a custom exception handler"),
                          ("tracing", "installed a trace or profile function"),
                          ("overrides", "overrode the shell's or kernel's execution methods")):
            if report[key] != base[key]:
                found.append(what)
        changed = sorted(k for k, v in report["ids"].items() if k in base["ids"] and base["ids"][k] != v)
        if changed:
            shown = sorted({k.split("#")[0] for k in changed})
            found.append(f"rebound {', '.join(shown[:5])}" + (" ..." if len(shown) > 5 else ""))
        for k, v in report["ids"].items():
            base["ids"].setdefault(k, v)
        for name, ref in report["answers"].items():
            if ref:
                found.append(f"{name} uses {ref}, the reference it is graded against")
        for ref in report.get("calls", []):
            found.append(f"the student's code called {ref}, the reference it is graded against, during a test")
        return found
