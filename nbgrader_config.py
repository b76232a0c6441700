"""nbgrader's view of this repo: solutions/ is nbgrader's source/, labs/ its release/, the rest lives in nbgrader/.

Used by `nbgrader ...` run from the repo root and by `python -m course_utils.grading` (which loads this file and,
for tests, points it at a temporary course directory).
"""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Importing course_utils keeps Jupyter/IPython/HF caches inside the repo; the grading env also puts the venv's
# bin/ on PATH (nbgrader runs `alembic`) and the repo on PYTHONPATH (the labs' kernels import course_utils).
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

# The labs' slowest real cell (a few training steps on 2 cores) takes a few seconds; 60 s leaves room for slow
# laptops and still cuts an infinite loop (the kernel is interrupted and the cell scores 0).
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True

# Grade cells are locked in the student version; autograde restores their original source (hidden tests too).
c.LockCells.lock_grade_cells = True
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Deleted cells come back from the release version before nbgrader checks the rest (see RestoreDeletedCells),
# and feedback never shows hidden tests, nor the source lines their tracebacks would quote (HideHiddenTests).
c.Autograde.sanitize_preprocessors = SANITIZE_PREPROCESSORS
c.GenerateFeedback.preprocessors = FEEDBACK_PREPROCESSORS
