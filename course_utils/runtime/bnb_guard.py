"""A guard against two bitsandbytes 0.50 CPU bugs that break QLoRA on the course model (installed on import).

1. The eval-mode repack (CPUs with AVX512-BF16, like the course machines). The first `Linear4bit` forward in
   eval mode without gradients calls `_convert_weight_packed_for_cpu`: it reorders the 4-bit codes for a fused
   bf16 kernel, drops double quantization and rounds absmax to bf16, in place and for good. Afterwards
   - training runs through that fused kernel, which has no backward: gradients no longer flow through W0 x,
     so most LoRA matrices get zero or wrong gradients and the loss falls far more slowly (no error, no warning
     unless warnings are on: "an autograd kernel was not registered");
   - PEFT's merge dequantizes the reordered codes as if they were not reordered: a scrambled merged weight;
   - layers whose in_features is not a multiple of 64 (the course model's down_proj, 352) crash the forward.
   The typical trigger is innocent: evaluate (or generate) before training.
2. Row-spanning blocks. The native CPU `dequantize_4bit` restarts its block count at each row, so when
   in_features is not a multiple of the blocksize (352 = 5.5 x 64) every row after the first uses the wrong
   absmax: the course model's down_proj dequantizes with ~2.3x the NF4 error. 1-D shapes come back as (1, n),
   and odd row lengths take a torch.compile'd path that compiles for ~30 s per new shape on 2 cores.

The fix for 1 PREVENTS the repack (the converter becomes a no-op) instead of undoing it afterwards, because
- the repack is lossy (bf16 absmax, double quantization dropped), so undoing cannot restore the weights;
- the converter is looked up when each forward runs, so the patch covers every Linear4bit, however and
  whenever it was created, with no per-model step to forget;
- eval and train then share one code path (dequantize + matmul in the compute dtype): eval logits equal
  training logits, which the packed bf16 kernel does not give.
  It costs only the fused bf16 inference kernel's speed.
The fix for 2 registers a CPU kernel for `bitsandbytes::dequantize_4bit` that calls the same native routine
with one block per row when the shape allows (so its row-relative block index is right), else a plain torch
path. It is registered only if a probe shows the installed bitsandbytes gets a row-spanning block wrong.

`install()` is cheap and idempotent: if bitsandbytes is not imported yet it only adds an import hook
(sys.meta_path) that patches `bitsandbytes.nn.modules` the moment it is first imported. Set COURSE_BNB_GUARD=0
to skip it; `with disabled():` switches it off temporarily (notebook 10 shows the failure that way).
"""
from __future__ import annotations

import contextlib
import math
import sys
import warnings

from . import switches

TARGET = "bitsandbytes.nn.modules"
_REPACK = "_convert_weight_packed_for_cpu"
ENV_SWITCH = "COURSE_BNB_GUARD"

_state = {
    "installed": False,  # install() was called (and not undone)
    "repack_blocked": False,  # the converter in bitsandbytes.nn.modules is our no-op
    "dequant_fix": "pending",  # "applied", "not needed", "not applicable", or "error: ..."
    "error": None,
}
_originals: dict = {}
_kernel_lib = None  # the torch.library.Library holding our dequantize_4bit CPU kernel


# ------------------------------------------------------------------------------------------------ the patches

def _keep_weight_unpacked(qweight, quant_state, *args, **kwargs):
    """Stands in for bitsandbytes' `_convert_weight_packed_for_cpu`: leave the 4-bit weight exactly as it is."""
    return qweight, quant_state


def _block_repack(modules) -> None:
    current = getattr(modules, _REPACK, None)
    if current is None or current is _keep_weight_unpacked:
        _state["repack_blocked"] = current is _keep_weight_unpacked
        return
    _originals[_REPACK] = current
    setattr(modules, _REPACK, _keep_weight_unpacked)
    _state["repack_blocked"] = True


def _torch_dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype):
    # bitsandbytes' own torch backend arithmetic (level * absmax in fp32, then cast), minus its torch.compile
    # wrapper, which spends ~30 s compiling on 2 cores for every new shape.
    import torch
    from bitsandbytes.backends.utils import _get_4bit_code

    n = math.prod(shape)
    code = _get_4bit_code(quant_type, A.device)
    flat = A.reshape(-1).to(torch.int64)
    values = code[torch.stack([flat >> 4, flat & 15], 1).reshape(-1)[:n]]
    full = n - n % blocksize
    out = torch.empty(n, dtype=torch.float32, device=A.device)
    out[:full] = (values[:full].view(-1, blocksize) * absmax[: full // blocksize].view(-1, 1)).reshape(-1)
    if full < n:
        out[full:] = values[full:] * absmax[full // blocksize]
    return out.reshape(shape).to(dtype)


def _native_dequantize(quant_type, dtype):
    import torch
    from bitsandbytes.cextension import lib

    suffix = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype)
    return getattr(lib, f"cdequantize_blockwise_cpu_{quant_type}_{suffix}", None) if suffix else None


def _dequantize_4bit_cpu(A, absmax, blocksize, quant_type, shape, dtype):
    import ctypes

    import torch
    from bitsandbytes.functional import get_ptr

    A = (A if A.dtype == torch.uint8 else A.view(torch.uint8)).contiguous()
    absmax = absmax.float().contiguous()
    n = math.prod(shape)
    native = _native_dequantize(quant_type, dtype)
    # bitsandbytes itself avoids its AVX512 kernel for blocks >= 2048 (accuracy), so do we.
    if native is None or n == 0 or n % blocksize or blocksize >= 2048:
        return _torch_dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype)
    cols = shape[-1] if len(shape) > 1 and shape[-1] % blocksize == 0 else blocksize  # blocks never span rows
    out = torch.empty(tuple(shape), dtype=dtype, device=A.device)
    native(get_ptr(A), get_ptr(absmax), get_ptr(out), ctypes.c_longlong(blocksize),
           ctypes.c_longlong(n // cols), ctypes.c_longlong(cols))
    return out


def _dequant_is_wrong() -> bool:
    """Probe both bugs: 2 rows of 96 with blocksize 64 (the middle block spans both rows), and a 1-D shape.

    Which one a machine has depends on the kernel bitsandbytes picks for its CPU (seen: the row bug on AVX512
    machines, the 1-D shape bug on AVX2-only ones), so both are probed everywhere.
    """
    import torch

    codes = torch.full((96,), 0xFF, dtype=torch.uint8)  # every value is level 15 = 1.0
    absmax = torch.tensor([1.0, 2.0, 3.0])
    out = torch.ops.bitsandbytes.dequantize_4bit.default(codes, absmax, 64, "nf4", [2, 96], torch.float32)
    expected = torch.tensor([1.0, 2.0, 3.0]).repeat_interleave(64).view(2, 96)
    flat = torch.ops.bitsandbytes.dequantize_4bit.default(codes, absmax, 64, "nf4", [192], torch.float32)
    return tuple(out.shape) != (2, 96) or not torch.equal(out, expected) or tuple(flat.shape) != (192,)


def _fix_dequantize() -> None:
    global _kernel_lib
    if _kernel_lib is not None:
        return
    import torch

    if "bitsandbytes.backends.cpu.ops" not in sys.modules or _native_dequantize("nf4", torch.float32) is None:
        _state["dequant_fix"] = "not applicable"  # no native CPU library: bitsandbytes uses its torch path
        return
    if not _dequant_is_wrong():
        _state["dequant_fix"] = "not needed"
        return
    lib = torch.library.Library("bitsandbytes", "FRAGMENT")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that a kernel is overridden: that is the point
        torch.library.register_kernel("bitsandbytes::dequantize_4bit", "cpu", _dequantize_4bit_cpu, lib=lib)
    _kernel_lib = lib
    _state["dequant_fix"] = "applied"


def _apply(modules) -> None:
    try:
        _block_repack(modules)
        _fix_dequantize()
    except Exception as exc:  # a guard must never be the reason bitsandbytes fails to import
        _state["error"] = f"{type(exc).__name__}: {exc}"
        if _kernel_lib is None:
            _state["dequant_fix"] = f"error: {exc}"
        warnings.warn(f"course_utils.bnb_guard could not patch bitsandbytes ({_state['error']}); QLoRA on CPU "
                      "may stop learning after an eval-mode forward. Fix: report it, and call model.train() "
                      "before any forward pass as a workaround.", RuntimeWarning, stacklevel=2)


def _drop_kernels_hub_hint(record) -> bool:
    """bitsandbytes, imported on a CPU with AVX512-BF16, tries to download a fused kernel from the Hugging Face Hub
    and, offline, logs 'pip install kernels' to stderr. That kernel serves only the packed eval path the guard
    blocks, and the course installs nothing at run time, so the hint is noise (and nbval fails on any stderr)."""
    return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community")


# ------------------------------------------------------------------------------------------------ the import hook

class _PatchingLoader:
    """Runs the real loader, then patches the fresh module before anyone can use it."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _remove_hook()
        if _state["installed"]:
            _apply(module)

    def __getattr__(self, name):  # get_source, get_filename, ... for tracebacks and inspect
        return getattr(self.loader, name)


class _ImportHook:
    """Finds nothing itself: for bitsandbytes.nn.modules it asks the other finders and wraps their loader.

    Duck-typed (no importlib.abc base) because importing importlib.abc alone costs ~40 ms on every import.
    """

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


_HOOK = _ImportHook()


def _remove_hook() -> None:
    while _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


# ------------------------------------------------------------------------------------------------ public API

def install() -> bool:
    """Activate the guard (idempotent, no bitsandbytes import). Returns whether it is installed."""
    if not switches.enabled(ENV_SWITCH):
        return False
    _state["installed"] = True
    import logging

    hub_log = logging.getLogger("bitsandbytes.backends.cpu.ops")  # the same object before and after its import
    if _drop_kernels_hub_hint not in hub_log.filters:
        hub_log.addFilter(_drop_kernels_hub_hint)
    modules = sys.modules.get(TARGET)
    if modules is not None:
        _apply(modules)
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
    return True


def uninstall() -> None:
    """Put bitsandbytes back as shipped (layers already repacked while it was off stay repacked)."""
    global _kernel_lib
    _state["installed"] = False
    _remove_hook()
    modules = sys.modules.get(TARGET)
    if modules is not None and _REPACK in _originals:
        setattr(modules, _REPACK, _originals.pop(_REPACK))
    _state["repack_blocked"] = False
    if _kernel_lib is not None:
        _kernel_lib._destroy()  # deregistering our kernel re-exposes bitsandbytes' own
        _kernel_lib = None
    _state["dequant_fix"] = "pending"


@contextlib.contextmanager
def disabled():
    """`with bnb_guard.disabled():` runs bitsandbytes unguarded, to reproduce the failure; restores the guard after."""
    was_installed = _state["installed"]
    uninstall()
    try:
        yield
    finally:
        if was_installed:
            install()


def is_active() -> bool:
    """True when the guard is installed and either patched bitsandbytes or waits for it to be imported."""
    return _state["installed"] and (_state["repack_blocked"] or _HOOK in sys.meta_path)


def cpu_has_avx512_bf16() -> bool | None:
    """Whether this CPU has AVX512-BF16 (the flag that triggers the repack); None if it cannot tell cheaply."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512_bf16" in line.split()
    except OSError:
        pass
    if "bitsandbytes.functional" in sys.modules:
        return bool(sys.modules["bitsandbytes.functional"].has_avx512bf16())
    return None


def status() -> dict:
    """What the doctor prints: is bitsandbytes there, which backend, is this CPU affected, is the guard on."""
    import importlib.util
    from importlib import metadata

    try:
        version = metadata.version("bitsandbytes")
    except metadata.PackageNotFoundError:
        version = None
    backend = None
    if version is not None:
        import torch

        backend = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "bitsandbytes_importable": importlib.util.find_spec("bitsandbytes") is not None,
        "bitsandbytes_version": version,
        "bitsandbytes_imported": "bitsandbytes" in sys.modules,
        "backend": backend,
        "cpu_avx512_bf16": cpu_has_avx512_bf16(),
        "guard_installed": _state["installed"],
        "guard_active": is_active(),
        "waiting_for_import": _HOOK in sys.meta_path,
        "repack_blocked": _state["repack_blocked"],
        "dequant_fix": _state["dequant_fix"],
        "disabled_by_env": not switches.enabled(ENV_SWITCH),
        "error": _state["error"],
    }


def packed_layers(model) -> list[str]:
    """Names of Linear4bit layers that bitsandbytes has already repacked (the guard prevents new ones)."""
    return [name for name, m in model.named_modules()
            if type(m).__name__ == "Linear4bit" and type(m).__module__.startswith("bitsandbytes")
            and getattr(getattr(m.weight, "quant_state", None), "packing_format_for_cpu", False)]


def repair(model) -> list[str]:
    """Undo repacks that happened before the guard was on (lossy: absmax stays bf16-rounded). Returns the names."""
    names = packed_layers(model)
    if not names:
        return names
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    for name in names:
        layer = model.get_submodule(name)
        layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
            layer.weight.data, layer.weight.quant_state)
        layer.quant_state = layer.weight.quant_state
    warnings.warn(f"Unpacked {len(names)} bitsandbytes layers repacked by an eval-mode forward; their absmax was "
                  "rounded to bf16 by the repack. Fix for exact weights: reload the model with the guard on "
                  "(import course_utils before running any forward pass).", UserWarning, stacklevel=2)
    return names
