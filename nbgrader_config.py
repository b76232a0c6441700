"""nbgrader's view of this repo: solutions/ is nbgrader's source/, labs/ its release/, the rest lives in nbgrader/.

Used by `nbgrader ...` run from the repo root and by `python -m course_utils.grading` (which loads this file and,
for tests, points it at a temporary course directory). Student notebooks are graded only by
`python -m course_utils.grading autograde`, which runs each one in a sandbox; plain `nbgrader autograde` refuses.
"""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Importing course_utils keeps Jupyter/IPython/HF caches inside the repo; the grading env also puts the venv's
# bin/ on PATH (nbgrader runs `alembic`) and the repo on PYTHONPATH (nbgrader imports the preprocessors below).
from course_utils.grading import FEEDBACK_PREPROCESSORS, SANITIZE_PREPROCESSORS, prepare_environment  # noqa: E402

prepare_environment(ROOT)

c = get_config()  # noqa: F821 (provided by traitlets when it executes this file)

c.CourseDirectory.root = ROOT
c.CourseDirectory.course_id = "lora-qlora-course"
c.CourseDirectory.source_directory = "solutions"             # instructor notebooks, executed, with solutions
c.CourseDirectory.release_directory = "labs"                 # what students get (generated, committed)
c.CourseDirectory.submitted_directory = "nbgrader/submitted"  # nbgrader/submitted/<student>/<lab>/<lab>.ipynb
c.CourseDirectory.autograded_directory = "nbgrader/autograded"
c.CourseDirectory.feedback_directory = "nbgrader/feedback"
c.CourseDirectory.solution_directory = "nbgrader/solution"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(ROOT, "nbgrader", "gradebook.db")

# Per cell: the labs' slowest real cell (a few training steps on 2 cores) takes a few seconds; 60 s leaves room for
# slow laptops and still cuts an infinite loop (the kernel is interrupted and the cell scores 0).
c.Execute.timeout = 60

# The sandboxed autograder's limits per notebook (course_utils/grading/sandbox.py has the rest): the wall clock for
# the whole notebook (a solution runs in under 20 s), the address space of its kernel, the outputs kept.
c.CourseGrader.notebook_timeout = 300
c.CourseGrader.memory_gib = 8
c.CourseGrader.output_kib = 1024

# Grade cells are locked in the student version; the autograder takes every test (hidden part included) and every
# provided cell from the course's own notebooks, whatever the submission holds.
c.LockCells.lock_grade_cells = True
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError(\"your answer goes here: replace "
                                        "this line with your code, run this cell, then the test cell below it\")"}

# Plain `nbgrader autograde` would run student code with your rights: it stops and names the sandboxed command.
# Feedback shows code, points and failure messages, never hidden tests or a student's raw outputs.
c.Autograde.sanitize_preprocessors = SANITIZE_PREPROCESSORS
c.GenerateFeedback.preprocessors = FEEDBACK_PREPROCESSORS
