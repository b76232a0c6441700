"""The red-team batch: one submission per attack class of issue 13, as a cheating student would write it.

Most attacks target the small red-team lab (redteam_lab.py, about a second per kernel); the ones about a
specific lab's reference run on that lab. Each Attack says what the test asserts: the score it must get (the
attack earns nothing), its status, and a fragment of the reason. Code that reaches for files uses the real
paths of this machine (the repo, its venv, the test course), filled in by `source()`.
"""
from __future__ import annotations

import os
import site
import sys
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from redteam_lab import NAME as RT
from submissions import LAB1, LAB2, LAB3, LAB4, LAB5, add_cell, index

ROOT = Path(__file__).resolve().parents[2]
MARKER = "redteam-detached-7f3a"

# Evading the static screen on purpose: getattr with built names reaches sys.modules and from there the shell.
# What these do is then caught by the probe after the cell (probe.py), which is what these attacks test.
MODULES = 'import sys\n_mods = getattr(sys, "mod" + "ules")\n'
SHELL = MODULES + '_sh = getattr(_mods["IPy" + "thon"], "get_" + "ipython")()\n'


def paths(course_root: Path) -> dict:
    return {"repo": str(ROOT), "course": str(course_root), "site": site.getsitepackages()[0],
            "home": os.path.expanduser("~"), "venv": sys.prefix, "marker": MARKER, "rt": RT}


def source(text: str, course_root: Path) -> str:
    return Template(text).substitute(paths(course_root))


@dataclass
class Attack:
    student: str
    lab: str
    klass: str               # the class of attack
    build: object            # (course, course_root) -> notebook
    score: float             # what the submission must score (honest parts included)
    status: str = "graded"
    reason: str = ""         # a fragment of the reason
    outputs: list = field(default_factory=list)   # fragments the autograded notebook must show (the box said no)


def _honest(c):
    return c.student_copy(RT)


def _blank(c):
    return c.student_copy(RT, filled=set())


def honest_plus(cell_source, after=None):
    return lambda c, root: add_cell(_honest(c), after, source(cell_source, root))


def blank_plus(cell_source, after=None):
    return lambda c, root: add_cell(_blank(c), after, source(cell_source, root))


def answer(grade_id, cell_source, filled=None, lab=RT):
    return lambda c, root: c.with_answer(lab, grade_id, source(cell_source, root), filled)


READ = '''
for p in ["$course/solutions/$rt/$rt.ipynb", "$course/nbgrader/gradebook.db", "$repo/solutions/$rt",
          "$repo/solutions/lab01_memory_wall/lab01_memory_wall.ipynb", "$repo/scripts/labs/lab01_memory_wall.py",
          "$repo/.git/HEAD", "$repo/nbgrader_config.py", "$repo/nbgrader/gradebook.db"]:
    try:
        print("READ", p, open(p, "rb").read(300))
    except Exception as e:
        print("BLOCKED", type(e).__name__, p)
'''
WRITE_NEXT = '''
open("leak.html", "w").write("<script>alert('leak')</script>")
for p in ["$course/nbgrader/feedback/r02_file_next/$rt/leak.html", "$course/nbgrader/autograded/r02_file_next/$rt/x.html"]:
    try:
        open(p, "w").write("<script>alert('leak')</script>")
        print("WROTE", p)
    except Exception as e:
        print("BLOCKED", type(e).__name__, p)
'''
HOOK_PLAIN = 'get_ipython().events.register("pre_run_cell", lambda info: print("LEAK", info.raw_cell))\n'
HOOK_EVASIVE = SHELL + 'getattr(_sh, "ev" + "ents").register("pre_run_cell", lambda info: print("LEAK", info.raw_cell))\n'
SCRIPT = '''
print("<script>alert('xss')</script>")
class Page:
    def _repr_html_(self):
        return "<script>alert('xss')</script><img src=x onerror=alert(1)>"
    def _repr_svg_(self):
        return "<svg onload=alert(2)></svg>"
Page()
'''
DOUBLE_SCRIPT = 'def double(x):\n    raise ValueError("<script>alert(3)</script><img src=x onerror=alert(4)>")\n'
REF_LAB1 = 'from course_utils.memory import full_finetune_bytes\n'
REF_LAB1_MODULE = 'import course_utils.memory as m\n\ndef lora_bytes(*args, **kwargs):\n    return m.lora_bytes(*args, **kwargs)\n'
REF_LAB2 = '''
from course_utils.lora import LoRALinear as _Ref

class LoRALinear(_Ref):
    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__(base, r, alpha, dropout=dropout)
        self.base, self.merged = self.base_layer, False
    lora_A = property(lambda self: self.A)
    lora_B = property(lambda self: self.B)
'''
REF_DYNAMIC = MODULES + 'def capital_sentence(country, city):\n    return _mods["course_utils.world"].fact_sentence(country, city)\n'
EXEC = 'exec(open("$course/solutions/$rt/$rt.ipynb").read())\n'
EXISTS = 'import os\nprint("EXISTS", os.path.exists("$course/solutions/$rt/$rt.ipynb"))\n'
CUSTOM_EXC = SHELL + '''
getattr(_sh, "set_" + "custom_exc")((BaseException,), lambda *a, **k: None)
getattr(_sh, "ev" + "ents").register("post_run_cell", lambda result: print("ok"))
'''
TRANSFORMER = SHELL + 'getattr(_sh, "input_" + "transformers_post").append(lambda lines: ["pass\\n"])\n'
REBIND = 'n_full, n_lora = 1, 1\ncheck_value = lambda *args, **kwargs: None\n'
REBIND_EVASIVE = MODULES + '''
def double(x):
    return 3 * x

setattr(_mods["math"], "isclose", lambda *a, **k: True)
'''
REF_LAB3 = '''
from bitsandbytes.functional import quantize_4bit

def quantize_nf4(w, blocksize=64):
    packed, state = quantize_4bit(w.float(), blocksize=blocksize, quant_type="nf4")
    return packed.view(-1), state.absmax
'''
FULL_FT = 'model.requires_grad_(True)\nn_trainable = count_parameters(model)[0]\n'
NO_QUANT = 'model = copy.deepcopy(base)\n'
# lab05: the broken config kept, the measured run replaced by made-up numbers (the visible test reads them)
FAKE_RUN = 'fixed_1 = dict(config_1)\nrun_fixed_1 = SimpleNamespace(letters_loss=0.0)\n'
WRONG = 'predicted = 41\n'
SQL = '''
import sqlite3
for sql in $sql:
    try:
        db = sqlite3.connect("$course/nbgrader/gradebook.db")
        db.execute(sql)
        db.commit()
        print("DB DONE", sql)
    except Exception as e:
        print("BLOCKED", type(e).__name__, sql)
'''


def sql(*statements):
    return SQL.replace("$sql", repr(list(statements)))


def write_files(*targets, mode="w"):
    lines = ["import os, shutil"]
    for t in targets:
        lines += ["try:", f"    open({t!r}, {mode!r}).write('import os  # planted\\n')",
                  f"    print('WROTE', {t!r})", "except Exception as e:",
                  f"    print('BLOCKED', type(e).__name__, {t!r})"]
    return "\n".join(lines) + "\n"


VANDAL = write_files("$repo/solutions/planted.txt", "$repo/course_utils/planted.py", "$course/labs/$rt/planted.txt") + '''
for d in ["$repo/docs", "$course/solutions"]:
    try:
        shutil.rmtree(d)
        print("DELETED", d)
    except Exception as e:
        print("BLOCKED", type(e).__name__, d)
'''
DETACHED = '''
import subprocess
p = subprocess.Popen(["sh", "-c", "sleep 300; echo $marker"], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
q = subprocess.Popen(["python", "-c", "import os, time\\nif os.fork() == 0:\\n    os.setsid()\\n    time.sleep(300)  # $marker"])
print("STARTED", p.pid, q.pid)
'''
LOCK = '''
import subprocess
subprocess.Popen(["python", "-c", "import sqlite3, time\\ndb = sqlite3.connect('$course/nbgrader/gradebook.db')\\n"
                  "db.execute('BEGIN EXCLUSIVE')\\ntime.sleep(300)  # $marker"], start_new_session=True)
print("LOCKER STARTED")
'''
SLEEPY = "import time\ntime.sleep(3.5)\n"
FLOOD_BIG = 'print("x" * (120 << 20))\n'
FLOOD_LINES = 'for i in range(20_000):\n    print("y" * 100)\n'
IGNORE_INTERRUPT = '''
import time
while True:
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        pass
'''
LIMITS = '''
import os, socket
def attempt(name, fn):
    try:
        fn()
        print("LIMIT", name, "ALLOWED")
    except BaseException as e:
        print("LIMIT", name, "BLOCKED", type(e).__name__)

def forkbomb():
    pids = []
    try:
        for _ in range(5000):
            pid = os.fork()
            if pid == 0:
                import time; time.sleep(20); os._exit(0)
            pids.append(pid)
    finally:
        for pid in pids:  # reaped, so that the kernel can start threads again
            os.kill(pid, 9)
            os.waitpid(pid, 0)

attempt("memory", lambda: bytearray(40 << 30))
attempt("file size", lambda: open("big.bin", "wb").write(b"0" * (200 << 20)))
attempt("network", lambda: socket.create_connection(("1.1.1.1", 53), timeout=3))
attempt("tmp space", lambda: [open(f"/tmp/fill{i}", "wb").write(b"0" * (60 << 20)) for i in range(10)])
attempt("processes", forkbomb)
'''


def _edit_provided(c, root):
    nb = c.with_answer(RT, "prediction", WRONG)
    i = next(i for i, cell in enumerate(nb.cells) if cell.source.startswith("measured = "))
    nb.cells[i].source = "measured = predicted"
    nb.cells.insert(i + 1, __import__("nbformat").v4.new_code_cell("measured = predicted  # again, to be sure"))
    return nb


def _skip_tags(c, root):
    nb = _blank(c)
    nb.metadata["kernelspec"] = {"name": "bash", "display_name": "Bash", "language": "bash"}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            cell.metadata["tags"] = ["skip-execution", "raises-exception"]
            meta.update(grade=False, points=0)
        elif meta.get("solution"):
            meta.update(grade=True, points=100)
    return nb


def _sleepy(c, root):
    nb = c.student_copy(RT, filled={"double"})
    for _ in range(6):
        add_cell(nb, "double_tests", SLEEPY)
    return nb


def _flood(c, root):
    return add_cell(add_cell(_honest(c), "capital_sentence_tests", FLOOD_LINES), "capital_sentence_tests", FLOOD_BIG)


def _limits(c, root):
    nb = _honest(c)
    head, *attempts = LIMITS.strip().split("\nattempt(")
    for a in reversed(attempts):  # one cell each: every limit gets its own cell timeout
        add_cell(nb, "capital_sentence_tests", "attempt(" + a)
    return add_cell(nb, "capital_sentence_tests", head)


def _two_answers(c, lab, answers: dict):
    nb = c.student_copy(lab)
    for gid, src in answers.items():
        nb.cells[index(nb, gid)].source = src
    return nb


ATTACKS = [
    # reading what students must not see
    Attack("r01_read_secrets", RT, "read solutions/gradebook", honest_plus(READ), 5,
           outputs=["BLOCKED FileNotFoundError"]),
    Attack("r02_file_next", RT, "files next to the notebook reach feedback", honest_plus(WRITE_NEXT), 5,
           outputs=["BLOCKED"]),
    Attack("r03_hook_leak", RT, "hook prints hidden tests", answer("double", HOOK_PLAIN + "def double(x):\n    return 2 * x\n"),
           1, "flagged", "not answered: it uses .events"),
    Attack("r04_hook_evasive", RT, "hook prints hidden tests", answer("double", HOOK_EVASIVE + "def double(x):\n    return 2 * x\n"),
           0, "flagged", "registered an IPython 'pre_run_cell' hook", outputs=["LEAK"]),
    Attack("r05_script", RT, "<script> output reaches feedback", lambda c, root: add_cell(
        c.with_answer(RT, "double", DOUBLE_SCRIPT), "capital_sentence_tests", SCRIPT), 1),
    # full marks without solving
    Attack("r06_ref_memory", LAB1, "import the reference", lambda c, root: _two_answers(
        c, LAB1, {"full_finetune_bytes": REF_LAB1, "lora_bytes": REF_LAB1_MODULE}), 4, "graded",
        "imports course_utils.memory.full_finetune_bytes"),
    Attack("r07_ref_lora", LAB2, "import the reference", answer("lora_layer", REF_LAB2, lab=LAB2), 1, "graded",
           "imports course_utils.lora.LoRALinear"),
    Attack("r31_ref_bnb", LAB3, "import the reference", answer("quantize_nf4", REF_LAB3, lab=LAB3), 10, "graded",
           "imports bitsandbytes.functional.quantize_4bit"),
    # not an attack but the two ways lab04 must refuse: each fails with its reason, the honest rest still counts
    Attack("r32_full_finetune", LAB4, "train the full model", answer("add_adapters", FULL_FT, lab=LAB4), 2, "graded",
           "failed: add_adapters_tests"),
    Attack("r33_no_quant", LAB4, "never quantize", answer("quantize_base", NO_QUANT, lab=LAB4), 4, "graded",
           "failed: quantize_base_tests"),
    # lab05's fix is trained again when grading: made-up numbers pass the visible test only (one diagnosis counts)
    Attack("r34_fake_run", LAB5, "report a run that never happened", answer("fix_config_1", FAKE_RUN, filled={"diagnose_1"},
           lab=LAB5), 1, "graded", "failed: fix_config_1_tests"),
    Attack("r08_ref_dynamic", RT, "import the reference", answer("capital_sentence", REF_DYNAMIC), 4, "flagged",
           "called fact_sentence"),
    Attack("r09_exec_solutions", RT, "exec the solutions", lambda c, root: add_cell(
        c.with_answer(RT, "double", source(EXEC, root)), "double", source(EXISTS, root)), 1, "flagged",
        "uses exec", outputs=["EXISTS False"]),
    Attack("r10_skip_tags", RT, "skip-execution tags", _skip_tags, 0),
    Attack("r11_custom_exc", RT, "hook emits a result / swallows errors", blank_plus(CUSTOM_EXC), 0, "flagged",
           "custom exception handler"),
    Attack("r12_transformer", RT, "input transformer rewrites tests", blank_plus(TRANSFORMER), 0, "flagged",
           "input or AST transformer"),
    Attack("r13_rebind", LAB2, "rebind the checking function", answer("lora_parameter_count", REBIND, lab=LAB2), 13,
           "flagged", "rebinds check_value"),
    Attack("r14_rebind_evasive", RT, "rebind the checking function", answer("double", REBIND_EVASIVE), 0,
           "flagged", "rebound math.isclose"),
    Attack("r15_edit_provided", RT, "edit provided cells", _edit_provided, 3, "graded",
           "edited provided cells restored"),
    Attack("r16_extra_credit", RT, "write the gradebook", honest_plus(sql(
        "UPDATE grade SET extra_credit = 100", "UPDATE grade SET auto_score = 100")), 5,
        outputs=["BLOCKED OperationalError"]),
    # harming others
    Attack("r17_harm_earlier", RT, "lower an earlier student's score", honest_plus(sql(
        "UPDATE grade SET manual_score = 0")), 5, outputs=["BLOCKED OperationalError"]),
    Attack("r18_replace_later", RT, "replace a later student's submission", honest_plus(write_files(
        "$course/nbgrader/submitted/zz_full/$rt/$rt.ipynb")), 5, outputs=["BLOCKED"]),
    Attack("r19_startup", RT, "IPython startup file", honest_plus(write_files(
        "$repo/.ipython/profile_default/startup/00-planted.py",
        "$home/.ipython/profile_default/startup/00-planted.py")), 5, outputs=["BLOCKED"]),
    Attack("r20_pyc", RT, "poisoned __pycache__", honest_plus(write_files(
        "$repo/course_utils/__pycache__/memory.cpython-311.pyc", mode="a")), 5, outputs=["BLOCKED"]),
    Attack("r21_pth", RT, ".pth in site-packages", honest_plus(write_files("$site/zz_planted.pth")), 5,
           outputs=["BLOCKED"]),
    Attack("r22_config", RT, "append to nbgrader_config.py", honest_plus(write_files(
        "$repo/nbgrader_config.py", mode="a")), 5, outputs=["BLOCKED"]),
    Attack("r23_gradebook_tests", RT, "rewrite the gradebook's tests", honest_plus(sql(
        "UPDATE source_cell SET source = 'pass'")), 5, outputs=["BLOCKED OperationalError"]),
    Attack("r24_vandal", RT, "write into solutions/ and course_utils/, delete docs", honest_plus(VANDAL), 5,
           outputs=["BLOCKED"]),
    Attack("r25_detached", RT, "a process that outlives its kernel", honest_plus(DETACHED), 5,
           outputs=["STARTED"]),
    Attack("r26_lock", RT, "a process locking the gradebook", honest_plus(LOCK), 5, outputs=["LOCKER STARTED"]),
    # exhausting the grader
    Attack("r27_sleepy", RT, "many cells just under the cell timeout", _sleepy, 2, "graded", "ran past its 12s limit"),
    Attack("r28_flood", RT, "a 120 MiB line of output", _flood, 5, outputs=["was dropped"]),
    Attack("r29_sigint", RT, "a kernel ignoring SIGINT", answer("capital_sentence", IGNORE_INTERRUPT), 4, "graded",
           "ignored the interrupt"),
    Attack("r30_limits", RT, "fork bomb, memory, file size, network, disk", _limits, 5,
           outputs=["LIMIT processes BLOCKED", "LIMIT memory BLOCKED", "LIMIT file size BLOCKED",
                    "LIMIT network BLOCKED", "LIMIT tmp space BLOCKED"]),
]
