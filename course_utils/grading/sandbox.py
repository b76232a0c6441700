"""The box a submission's kernel runs in: bubblewrap (bwrap), resource limits, a throwaway home.

What the kernel can see: the system's /usr, the Python installation, the course's virtual environment and the
`course_utils` package, all read-only. Nothing else of the course: not solutions/, not nbgrader/ (submissions,
gradebook), not scripts/ (lab sources), not .git, not the instructor's Jupyter/IPython config. Its home, /tmp and
the package's cache folder are private size-capped tmpfs that vanish with it; the only host folder it can write is
its own run folder (the kernel's connection file and sockets). No network (its own empty network namespace), its
own PID namespace (when the kernel exits or is killed, every process it started dies with it), no capabilities.
Limits per kernel: address space, processes, file size, CPU time, open files (`prlimit`); wall clock per cell and
per notebook are enforced from outside by the executor.

Grading as root is not required. As root, bwrap mounts with root's rights, then the kernel drops to an unused uid
(one per parallel job) with `setpriv`: the process-count limit does not apply to uid 0. As a normal user, bwrap
uses a user namespace and the limits apply to that user.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..paths import PACKAGE_DIR, REPO_ROOT

INSTALL_HINT = ("install bubblewrap: `apt-get install -y bubblewrap` (Debian/Ubuntu, as root) or "
                "`dnf install bubblewrap` (Fedora)")
BWRAP_ENV = "COURSE_BWRAP"           # path to bwrap; tests point it at a missing file to see the refusal
SANDBOX_UID = 2_147_000_000          # + job slot; an unassigned uid, used only when grading as root
HOME = "/home/student"


@dataclass(frozen=True)
class Limits:
    """Per-kernel limits. Times in seconds, sizes in bytes."""

    cell_timeout: float = 60
    notebook_timeout: float = 600
    memory: int = 8 << 30            # address space (torch reserves far more than it touches; measured peak < 3 GiB)
    processes: int = 256             # threads count too (torch starts a few per process)
    file_size: int = 64 << 20
    scratch: int = 256 << 20         # each tmpfs: home, /tmp, the package cache
    output: int = 1 << 20            # outputs kept per notebook
    message: int = 32 << 20          # a larger kernel message is dropped by ZMQ before it is read
    interrupt_grace: float = 5       # after a timeout's interrupt, how long before the kernel is killed

    def with_overrides(self, **kw) -> "Limits":
        fields = {k: v for k, v in kw.items() if v is not None}
        return Limits(**{**self.__dict__, **fields})


class SandboxUnavailable(RuntimeError):
    """No working sandbox on this machine; the message says why and how to get one."""


def bwrap_path() -> str | None:
    override = os.environ.get(BWRAP_ENV)
    if override is not None:
        return override if os.access(override, os.X_OK) else None
    return shutil.which("bwrap")


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@functools.lru_cache(maxsize=None)
def _probe(bwrap: str) -> str | None:
    """Run a do-nothing Python in the same box the kernels get; None if it works, else the reason."""
    box = Sandbox(Limits(), slot=0, bwrap=bwrap)
    cmd = box.command([sys.executable, "-c", "import course_utils"], rundir=None)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{bwrap} could not run: {e}"
    if res.returncode != 0:
        return f"{bwrap} fails here: {(res.stderr or res.stdout).strip().splitlines()[-1:] or res.returncode}"
    return None


def problem() -> str | None:
    """Why untrusted notebooks cannot be graded safely here (None: the sandbox works). One line, with the fix."""
    if not sys.platform.startswith("linux"):
        return f"the grading sandbox needs Linux (bubblewrap); this is {sys.platform}. Fix: grade on a Linux machine."
    bwrap = bwrap_path()
    if bwrap is None:
        return f"bubblewrap (bwrap) is not installed, so student code cannot be sandboxed. Fix: {INSTALL_HINT}."
    why = _probe(bwrap)
    if why:
        hint = ("run the grader as root, or enable unprivileged user namespaces "
                "(`sysctl kernel.unprivileged_userns_clone=1`)" if not _as_root() else INSTALL_HINT)
        return f"the bubblewrap sandbox does not work here ({why}). Fix: {hint}."
    return None


def require() -> None:
    why = problem()
    if why:
        raise SandboxUnavailable(why)


class Sandbox:
    """Builds the command line that runs `argv` (the kernel) inside the box."""

    def __init__(self, limits: Limits, slot: int = 0, bwrap: str | None = None, package_dir: Path = PACKAGE_DIR):
        self.limits, self.slot = limits, slot
        self.bwrap = bwrap or bwrap_path()
        self.package_dir = Path(package_dir)
        self.uid = SANDBOX_UID + slot if _as_root() else None

    def prepare_rundir(self, rundir: Path, files=()) -> None:
        """The one host folder the kernel writes (its sockets); as root it belongs to the kernel's uid."""
        os.chmod(rundir, 0o700)
        if self.uid is not None:
            for p in [rundir, *files]:
                os.chown(p, self.uid, self.uid)

    def environment(self, home: str = HOME) -> dict[str, str]:
        h = home
        return {
            "HOME": h, "USER": "student", "LOGNAME": "student", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
            "PATH": os.pathsep.join([str(Path(sys.prefix) / "bin"), "/usr/local/bin", "/usr/bin", "/bin"]),
            "IPYTHONDIR": f"{h}/.ipython", "JUPYTER_CONFIG_DIR": f"{h}/.jupyter", "JUPYTER_DATA_DIR": f"{h}/.jupyter/data",
            "JUPYTER_RUNTIME_DIR": f"{h}/.jupyter/runtime", "MPLCONFIGDIR": f"{h}/.matplotlib", "HF_HOME": f"{h}/.hf",
            "TRITON_CACHE_DIR": f"{h}/.triton", "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1",
            # one thread: a grader sharing its cores with other jobs does not collapse, and numbers repeat
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "PYTHONHASHSEED": "0",
            "COURSE_GRADING": "1",
        }

    def _mounts(self, rundir: Path | None) -> list[str]:
        args: list[str] = []
        made: set[str] = set()

        def parents(path) -> list[str]:
            # bwrap creates missing parents root-only; the kernel's uid must be able to walk through them
            out, parts = [], Path(path).parts
            for i in range(2, len(parts)):
                d = str(Path(*parts[:i]))
                if d not in made:
                    made.add(d)
                    out += ["--perms", "0755", "--dir", d]
            return out

        def ro(path):
            path = str(path)
            if path not in made and os.path.exists(path):
                made.add(path)
                args.extend(parents(path) + ["--ro-bind", path, path])

        args += ["--ro-bind", "/usr", "/usr"]
        made.add("/usr")
        size = str(self.limits.scratch)
        # /tmp first: a course cloned under /tmp (and its venv) is bound on top of the empty tmpfs, not hidden by it
        args += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
        made.add("/tmp")
        for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(d):
                args += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                ro(d)
        for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives"):
            ro(f)
        for prefix in {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix}:
            if not prefix.startswith("/usr/"):
                ro(prefix)
        ro(self.package_dir)
        args += ["--proc", "/proc", "--dev", "/dev"]
        for d in (HOME, str(REPO_ROOT / ".cache")):
            args += parents(d) + ["--perms", "1777", "--size", size, "--tmpfs", d]
        if rundir is not None:
            args += parents(rundir) + ["--bind", str(rundir), str(rundir)]
        return args

    def command(self, argv: list[str], rundir: Path | None) -> list[str]:
        """bwrap [namespaces, mounts, env] -- [setpriv (as root)] prlimit [limits] -- argv"""
        lim = self.limits
        cmd = [self.bwrap, "--die-with-parent", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
               "--unshare-cgroup-try", "--hostname", "grader", "--new-session"]
        if self.uid is None:
            cmd += ["--unshare-user", "--cap-drop", "ALL"]
        cmd += self._mounts(rundir)
        cmd += ["--chdir", HOME, "--clearenv"]
        for k, v in self.environment().items():
            cmd += ["--setenv", k, v]
        cmd.append("--")
        if self.uid is not None:
            cmd += ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        cpu = int(lim.notebook_timeout * 2 + 60)  # CPU seconds: a backstop; the wall clock is enforced outside
        cmd += ["prlimit", f"--as={lim.memory}", f"--nproc={self._nproc()}", f"--fsize={lim.file_size}",
                f"--cpu={cpu}", "--nofile=1024", "--core=0", "--"]
        return cmd + list(argv)

    def _nproc(self) -> int:
        if self.uid is not None:  # a uid of its own: only its own processes count
            return self.limits.processes
        # as a normal user the count includes the user's other processes (this grader, their desktop, ...)
        mine = 0
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    mine += p.stat().st_uid == os.getuid() and len(list((p / "task").iterdir()))
                except OSError:
                    pass
        return mine + self.limits.processes
