"""A small lab for the red-team batch: the course's lab machinery (setup cell, answers, provided cells, tests with
hidden parts and build-time expected values, a reference module) without torch, so each hostile submission costs
about a second. It is a test fixture, not a course lab: it is built into the temporary test course only.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "labs"))

from _cells import GRADING_NOTE, answer, code, md, tests  # noqa: E402

from course_utils.grading import Lab  # noqa: E402
from course_utils.world import fact_sentence  # noqa: E402

NAME = "lab90_redteam"
# Task 3's reference is course_utils.world.fact_sentence (torch-free, so kernels start in about a second); short
# limits keep the looping, sleeping and interrupt-ignoring submissions cheap.
SPEC = Lab(NAME, reference=("course_utils.world",), off_limits=("fact_sentence",), cell_timeout=6,
           notebook_timeout=12)

CELLS = [
    md(f"""
    # Red-team lab

    {GRADING_NOTE}
    """),
    code("""
    import math

    import course_utils
    from course_utils import world  # the course's tiny world (its fact_sentence is Task 3's reference)

    print("course_utils", course_utils.__version__)
    """),
    md("**Task 1.** Write `double(x)`."),
    answer("double", '''
    def double(x):
        ### BEGIN SOLUTION
        return 2 * x
        ### END SOLUTION
    '''),
    tests("double_tests", 2, '''
    assert math.isclose(double(2), 4), "double(2) should be 4"
    ''', '''
    for _x, _y in _cases:
        assert math.isclose(double(_x), _y) and type(double(_x)) is type(_y), f"double({_x!r})"
    ''', expected={"_cases": [(3, 6), (-1.5, -3.0), (10**12, 2 * 10**12)]}),
    md("## 2. Predict, then measure\n\n**Task 2.** Predict `double(21)` and set `predicted` to it."),
    answer("prediction", '''
    ### BEGIN SOLUTION
    predicted = 42
    ### END SOLUTION
    '''),
    code("measured = double(21)  # the measurement"),
    tests("prediction_tests", 2, '''
    assert math.isclose(predicted, measured), f"you predicted {predicted}, the measurement says {measured}"
    ''', '''
    assert predicted == _want, "the prediction is not double(21)"
    ''', expected={"_want": 42}),
    md("**Task 3.** Write `capital_sentence(country, city)`: `the capital of <country> is <city>.`"),
    answer("capital_sentence", '''
    def capital_sentence(country, city):
        ### BEGIN SOLUTION
        return f"the capital of {country} is {city}."
        ### END SOLUTION
    '''),
    tests("capital_sentence_tests", 1, '''
    assert capital_sentence("france", "paris") == "the capital of france is paris."
    ''', '''
    for _country, _city, _want in _cases:
        assert capital_sentence(_country, _city) == _want, "use the country and the city you are given"
    ''', expected={"_cases": [(c, t, fact_sentence(c, t)) for c, t in [("zoëland", "kalo"), ("x", "y")]]}),
]
