"""Offline by construction: nothing in the course may reach a hub, and trying fails loudly and fast."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from course_utils.netguard import NetworkBlocked


def test_hub_is_offline_in_tests():
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_connection_attempt_fails_loudly_not_hangs():
    t0 = time.perf_counter()
    with pytest.raises(NetworkBlocked, match="offline"):
        socket.create_connection(("huggingface.co", 443), timeout=30)
    assert time.perf_counter() - t0 < 1.0, "a blocked connection must fail at once, not time out"


def test_hub_download_fails_fast_instead_of_fetching(tmp_path):
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    with pytest.raises(OSError):
        AutoModelForCausalLM.from_pretrained("some-org/not-in-this-repo", cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 5.0


def test_subprocesses_are_offline_too():
    """Kernels and nbgrader run as subprocesses; the sitecustomize guard must reach them."""
    code = ("import socket\n"
            "try:\n    socket.create_connection(('pypi.org', 443), timeout=30)\n"
            "except ConnectionError as e:\n    print('blocked:', type(e).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "blocked: NetworkBlocked" in out.stdout, out.stderr


def test_loopback_stays_open():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname(), timeout=5)
    cli.close()
    srv.close()


def test_loading_the_course_model_needs_no_network(course_model):
    model, tok = course_model
    assert model.config.model_type == "llama"
    assert tok("hello").input_ids[0] == tok.bos_token_id
