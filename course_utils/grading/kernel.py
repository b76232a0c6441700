"""One sandboxed kernel, driven from outside: run a cell, read its reply and (capped) outputs, probe it, kill it.

The grader talks to the kernel over Unix sockets in the kernel's run folder (the sandbox has no network, so TCP
on its loopback would be unreachable). Every message larger than `Limits.message` is dropped by ZMQ before it
reaches Python, and outputs are kept up to `Limits.output` bytes per notebook: a cell printing 120 MiB costs the
grader almost nothing. A cell that runs past its time is interrupted; a kernel that ignores the interrupt is
killed (its whole PID namespace with it) and the rest of the notebook does not run.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty

import zmq
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpec

from .sandbox import Limits, Sandbox

KEEP_MIME = ("text/plain", "image/png", "image/jpeg")  # never HTML, SVG, JavaScript or widgets: they run in browsers


@dataclass
class CellRun:
    status: str = "ok"            # ok | error | timeout | killed | dead | skipped
    ename: str = ""
    evalue: str = ""
    outputs: list = field(default_factory=list)
    execution_count: int | None = None
    seconds: float = 0.0


class KernelStartError(RuntimeError):
    """The kernel could not start: always the grading environment's problem, never the student's."""


class _SandboxedKernelManager(KernelManager):
    """A KernelManager whose kernel command is wrapped in the sandbox (see sandbox.Sandbox.command)."""

    sandbox: Sandbox = None
    rundir: Path = None

    def format_kernel_cmd(self, extra_arguments=None):
        argv = super().format_kernel_cmd(extra_arguments)
        self.sandbox.prepare_rundir(self.rundir, [Path(self.connection_file)])
        return self.sandbox.command(argv, self.rundir)


def _kernel_spec(python: str) -> KernelSpec:
    argv = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}",
            "--HistoryManager.enabled=False", "--IPKernelApp.extensions=[]", "--InteractiveShellApp.exec_files=[]",
            "--InteractiveShellApp.exec_lines=[]"]
    # "message": interrupt through the control channel; a signal from outside would hit bwrap, not the kernel
    return KernelSpec(argv=argv, display_name="sandboxed python", language="python", interrupt_mode="message")


class Kernel:
    """with Kernel(sandbox, limits) as k: k.run(code) ..."""

    def __init__(self, sandbox: Sandbox, limits: Limits, python: str):
        self.sandbox, self.limits, self.python = sandbox, limits, python
        self.output_left = limits.output
        self.dead = False

    def __enter__(self):
        self.rundir = Path(tempfile.mkdtemp(prefix="course-grader-"))
        self._log = open(self.rundir / "kernel.log", "wb")
        km = _SandboxedKernelManager(transport="ipc", ip=str(self.rundir / "s"),
                                     connection_file=str(self.rundir / "kernel.json"))
        km._kernel_spec = _kernel_spec(self.python)
        km.sandbox, km.rundir = self.sandbox, self.rundir
        self.km = km
        try:
            km.start_kernel(stdout=self._log, stderr=self._log, env={}, cwd=str(self.rundir))
            ctx = zmq.Context()
            ctx.setsockopt(zmq.MAXMSGSIZE, int(self.limits.message))
            # a client of the manager asks the manager (the process), not the heartbeat, whether the kernel lives:
            # a heartbeat missed while 2 jobs import torch on 2 cores is not a dead kernel
            self.kc = km.client(context=ctx)
            self.kc.start_channels(hb=False)
            self.kc.wait_for_ready(timeout=120)
        except BaseException as e:
            tail = self.log_tail()
            self.__exit__(None, None, None)
            raise KernelStartError(f"the sandboxed kernel did not start ({e}); its log ends: {tail[-600:]!r}") from e
        return self

    def __exit__(self, *exc):
        kc = getattr(self, "kc", None)
        if kc is not None:
            kc.stop_channels()
            kc.context.destroy(linger=0)
        self.kill()
        try:
            self.km.cleanup_resources()
        except Exception:  # noqa: BLE001 - nothing left to clean
            pass
        self._log.close()
        shutil.rmtree(self.rundir, ignore_errors=True)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.rundir / "kernel.log").read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the sandbox's PID 1, which takes every process of the namespace with it; bwrap then exits."""
        self.dead = True
        proc = getattr(self.km.provisioner, "process", None) if self.km.provisioner else None
        if proc is None:
            return
        try:  # killing the outer bwrap first would leave its PID 1 as a zombie of the host's init
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            for pid in children:
                os.kill(int(pid), signal.SIGKILL)
            proc.wait(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def alive(self) -> bool:
        return not self.dead and self.km.is_alive()

    # ------------------------------------------------------------------------------------------ running cells

    def run(self, code: str, timeout: float) -> CellRun:
        """Execute one cell; never raises for anything the cell does."""
        run, t0 = CellRun(), time.monotonic()
        if not self.alive():
            run.status = "dead"
            return run
        msg_id = self.kc.execute(code, silent=False, store_history=True, allow_stdin=False, stop_on_error=False)
        deadline, interrupted, reply, idle, reply_at = t0 + max(timeout, 0.1), None, None, False, None
        pending_clear = False
        while True:
            now = time.monotonic()
            if reply is not None and idle:
                break
            if reply is not None and now - reply_at > 2:  # the idle status never came: a message was dropped
                self._reconnect_iopub(run.outputs)
                break
            if interrupted is None and now > deadline:
                interrupted = now
                try:
                    self.km.interrupt_kernel()
                except Exception:  # noqa: BLE001
                    pass
            if interrupted is not None and reply is None and now - interrupted > self.limits.interrupt_grace:
                self.kill()
                run.status = "killed"
                break
            try:
                msg = self.kc.get_iopub_msg(timeout=0.05)
            except Empty:
                msg = None
            if msg is not None and msg.get("parent_header", {}).get("msg_id") == msg_id:
                kind, content = msg["msg_type"], msg["content"]
                if kind == "status" and content.get("execution_state") == "idle":
                    idle = True
                elif kind == "clear_output":
                    if content.get("wait"):
                        pending_clear = True
                    else:
                        run.outputs.clear()
                elif kind in ("stream", "display_data", "execute_result", "error"):
                    if pending_clear:
                        run.outputs.clear()
                        pending_clear = False
                    self._keep(run.outputs, kind, content)
            while reply is None:
                try:
                    sm = self.kc.get_shell_msg(timeout=0)
                except Empty:
                    break
                if sm.get("parent_header", {}).get("msg_id") == msg_id:
                    reply, reply_at = sm["content"], time.monotonic()
            if reply is None and msg is None and not self.km.is_alive():
                self.dead = True
                run.status = "dead"
                break
        run.seconds = time.monotonic() - t0
        if reply is not None:
            run.execution_count = reply.get("execution_count")
            run.status = "timeout" if interrupted is not None else reply.get("status", "error")
            if run.status in ("error", "timeout"):
                run.ename, run.evalue = str(reply.get("ename", ""))[:200], str(reply.get("evalue", ""))[:2000]
        return run

    def probe(self, expression: str, timeout: float = 30) -> str | None:
        """Evaluate one expression through user_expressions (no input transformers, no cell hooks); its text."""
        if not self.alive():
            return None
        msg_id = self.kc.execute("", silent=True, store_history=False, user_expressions={"p": expression})
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = self.kc.get_shell_msg(timeout=0.5)
            except Empty:
                if not self.km.is_alive():
                    self.dead = True
                    return None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                value = msg["content"].get("user_expressions", {}).get("p", {})
                if value.get("status") != "ok":
                    return None
                return value.get("data", {}).get("text/plain")
        return None

    def _reconnect_iopub(self, outputs: list) -> None:
        """ZMQ drops a message over the size limit together with the connection; a fresh one gets the rest."""
        self.kc.iopub_channel.stop()
        self.kc._iopub_channel = None
        self.kc.iopub_channel.start()
        time.sleep(0.2)
        outputs.append({"output_type": "stream", "name": "stderr",
                        "text": f"[grader: an output over {self.limits.message} bytes was dropped]\n"})

    # ------------------------------------------------------------------------------------------ outputs

    def _keep(self, outputs: list, kind: str, content: dict) -> None:
        """Append one output as nbformat JSON, keeping only safe MIME types and at most the notebook's budget."""
        if kind == "stream":
            out = {"output_type": "stream", "name": content.get("name", "stdout"), "text": str(content.get("text", ""))}
        elif kind == "error":
            out = {"output_type": "error", "ename": str(content.get("ename", ""))[:200],
                   "evalue": str(content.get("evalue", ""))[:2000],
                   "traceback": [str(t)[:2000] for t in content.get("traceback", [])[:40]]}
        else:
            data = {k: v for k, v in content.get("data", {}).items() if k in KEEP_MIME and isinstance(v, str)}
            for k in ("image/png", "image/jpeg"):
                if k in data and not _is_base64(data[k]):
                    del data[k]
            if not data:
                return
            out = {"output_type": kind, "data": data, "metadata": {}}
            if kind == "execute_result":
                out["execution_count"] = content.get("execution_count")
        size = len(json.dumps(out))
        if size > self.output_left:
            if self.output_left > 0:
                outputs.append({"output_type": "stream", "name": "stderr",
                                "text": f"[grader: output over the notebook's {self.limits.output} byte limit dropped]\n"})
            self.output_left = 0
            return
        self.output_left -= size
        if kind == "stream" and outputs and outputs[-1].get("output_type") == "stream" \
                and outputs[-1].get("name") == out["name"]:
            outputs[-1]["text"] += out["text"]
        else:
            outputs.append(out)


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text.replace("\n", ""), validate=True)
        return True
    except ValueError:
        return False
