# Put on PYTHONPATH by tests/conftest.py so every Python subprocess of the test suite (nbval kernels, nbgrader,
# jupyter) is offline too, not just the pytest process.
import os

if os.environ.get("COURSE_BLOCK_NETWORK") == "1":
    try:
        from course_utils.netguard import block_network

        block_network()
    except ImportError:
        pass
