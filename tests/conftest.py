"""Fixtures shared by the test files (the environment itself is set up by the root conftest.py)."""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    import torch

    has_cuda = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (runs on the GPU path only)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def one_thread():
    """The course model's matmuls are tiny: one intra-op thread is as fast, gives the same numbers everywhere, and is
    immune to OpenMP stalls when the 2 cores are shared (measured: a QLoRA test took 1 s with 1 thread, 20 s with 2)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def course_model():
    """The pretrained course model and tokenizer, loaded once per session; tests must not mutate it."""
    from course_utils.models import load_course_model

    return load_course_model()


@pytest.fixture
def fresh_course_model():
    """A private copy for tests that train or modify the model."""
    from course_utils.models import load_course_model

    return load_course_model()
