"""Compiler facts about the Triton kernels: registers, spills and shared memory, as the compiler reports them.

Launch configurations are chosen from these facts, never from an estimate of a tile's footprint:

* on a GPU, `runtime_facts` compiles a config for the current device (`JITFunction.warmup`: the
  same compile the launch would do, cached by Triton) and reads what the driver reports when the
  binary is loaded (registers, local memory, shared memory); the limit is the driver's own
  `max_shared_mem` (the opt-in dynamic shared memory per block);
* without a GPU, `aot_facts` compiles for an explicit `GPUTarget("cuda", arch, 32)` through the
  ptxas shipped in the Triton wheel and reads the cubin's resource usage with the wheel's
  cuobjdump; the limit is the published one (`SMEM_LIMIT`).

Both count spills as Triton does (local memory bytes per thread / 4) and feed one rule,
`keep_fitting`: a config is kept when it compiles, does not spill and fits in shared memory.

`recorded_launches` lets a caller run the launchers on `meta` tensors and collect the kernels and
arguments they would launch, instead of launching them: the ahead-of-time check compiles exactly
what the launchers pass, whatever features they grow.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass

import triton

# Opt-in dynamic shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin), from the CUDA C
# Programming Guide's table of compute capabilities: A100 (sm_80) 163 KiB, RTX 30xx/40xx (sm_86,
# sm_89) 99 KiB, H100/H200 (sm_90) 227 KiB. Used ahead of time only; on a GPU the driver says.
SMEM_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}


@dataclass(frozen=True)
class Facts:
    """What the compiler made of one kernel at one config."""

    regs: int  # registers per thread
    spills: int  # as Triton's n_spills: local memory bytes per thread / 4
    shared: int  # bytes of shared memory per program (dynamic + static)
    error: str = ""  # the compile error, if it failed

    def problem(self, smem_limit: int) -> str:
        """Why this config must not be launched ('' if it may)."""
        if self.error:
            return f"compile error: {self.error}"
        if self.spills:
            return f"spills {self.spills}"
        if self.shared > smem_limit:
            return f"shared memory {self.shared} > {smem_limit}"
        return ""


def config_name(config: triton.Config) -> str:
    """e.g. 'BLOCK_M=128 BLOCK_N=64 w8 s3'."""
    if not isinstance(config, triton.Config):
        return str(config)
    blocks = " ".join(f"{k}={v}" for k, v in config.kwargs.items())
    return f"{blocks} w{config.num_warps} s{config.num_stages}"


def keep_fitting(configs, facts_of, smem_limit: int) -> list:
    """The configs (in order) whose compiled kernel neither spills nor overflows shared memory.

    If none does, the one that fits shared memory with the fewest spills, with a warning: a slow
    kernel beats no kernel. `facts_of(config)` returns a `Facts`.
    """
    facts = {c: facts_of(c) for c in configs}
    kept = [c for c in configs if not facts[c].problem(smem_limit)]
    if kept:
        return kept
    runnable = [c for c in configs if not facts[c].error and facts[c].shared <= smem_limit] or list(configs)
    best = min(runnable, key=lambda c: (facts[c].spills, facts[c].shared))
    warnings.warn(f"no launch config is free of spills and within {smem_limit} B of shared memory; using "
                  f"{config_name(best)} ({facts[best].problem(smem_limit)})", stacklevel=2)
    return [best]


# ---------------------------------------------------------------------------------------------
# On a GPU
# ---------------------------------------------------------------------------------------------

_RUNTIME_FACTS: dict = {}


def _specialization_key(kernel, args: dict) -> tuple:
    """What of the arguments changes the compiled code: constexpr values, dtypes, which ints are 1 or
    16-aligned (Triton specializes on those)."""
    constexprs = {p.name for p in kernel.params if p.is_constexpr}

    def key(name, v):
        if name in constexprs:
            return repr(v)
        if hasattr(v, "dtype") and hasattr(v, "data_ptr"):
            return str(v.dtype)
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, int):
            return ("int", v == 1, v % 16 == 0, abs(v) >= 2**31)
        return type(v).__name__
    return tuple((k, key(k, v)) for k, v in sorted(args.items()))


def runtime_facts(kernel, args: dict, config: triton.Config) -> Facts:
    """Compile `kernel` with `args` at `config` for the current CUDA device (cached) and read its facts."""
    key = (kernel, _specialization_key(kernel, args), config_name(config))
    if key not in _RUNTIME_FACTS:
        from triton.runtime.errors import OutOfResources

        try:
            compiled = kernel.warmup(**args, **config.kwargs, num_warps=config.num_warps,
                                     num_stages=config.num_stages, grid=(1,))
            compiled._init_handles()  # loads the binary: the driver reports registers and local memory
            facts = Facts(compiled.n_regs, compiled.n_spills, compiled.metadata.shared)
        except OutOfResources as err:  # raised on load when shared memory (or threads) exceed the device's
            facts = Facts(0, 0, int(err.required)) if err.name == "shared memory" else Facts(0, 0, 0, str(err))
        except Exception as err:  # noqa: BLE001 (a config that does not compile is pruned, not fatal)
            facts = Facts(0, 0, 0, _one_line(err))
        _RUNTIME_FACTS[key] = facts
    return _RUNTIME_FACTS[key]


def device_smem_limit() -> int:
    """The current CUDA device's opt-in shared memory per block, as the driver reports it."""
    import torch

    props = triton.runtime.driver.active.utils.get_device_properties(torch.cuda.current_device())
    return int(props["max_shared_mem"])


# ---------------------------------------------------------------------------------------------
# Ahead of time, without a GPU
# ---------------------------------------------------------------------------------------------


def _tool(name: str) -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _resource_usage(cubin: bytes, name: str) -> tuple[int, int, int]:
    """(registers, local bytes, static shared bytes) of function `name` in a cubin, by cuobjdump."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    block = out.split(f"Function {name}:", 1)[1]
    usage = dict(re.findall(r"(\w+):(\d+)", block.splitlines()[1]))
    return int(usage["REG"]), int(usage["LOCAL"]), int(usage["SHARED"])


def _one_line(err: BaseException) -> str:
    """The reason of a (Triton compile) error on one line: Triton puts it after the source excerpt,
    or in the chained cause."""
    text = str(err.__cause__ or err)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().strip("^")]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"[:200]


def aot_facts(kernel, args: dict, config: triton.Config, arch: int) -> Facts:
    """Compile `kernel` for sm_`arch` with the specialization a launch with `args` would get.

    Uses the JIT's own binder, so pointer alignment, ints equal to 1 and constexprs are specialized
    exactly as at launch; tensors may live on the `meta` device. Compiles are cached on disk by
    Triton (TRITON_CACHE_DIR), so a repeated check only re-runs ptxas for changed kernels.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    launch_options = dict(num_warps=config.num_warps, num_stages=config.num_stages)
    try:
        binder = create_function_from_signature(kernel.signature, kernel.params, backend)
        bound, specialization, options = binder(**args, **config.kwargs, **launch_options)
        options, signature, constexprs, attrs = kernel._pack_args(backend, launch_options, bound, specialization,
                                                                  options)
        compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                                  options=options.__dict__)
        regs, local, static_shared = _resource_usage(compiled.asm["cubin"], compiled.name)
    except Exception as err:  # noqa: BLE001 (reported as a fact: this config does not compile)
        return Facts(0, 0, 0, _one_line(err))
    return Facts(regs, local // 4, compiled.metadata.shared + static_shared)


# ---------------------------------------------------------------------------------------------
# Recording launches instead of running them
# ---------------------------------------------------------------------------------------------


@dataclass
class Launch:
    name: str  # the launcher's name for it, e.g. "fwd", "norm_bwd"
    kernel: object  # the JITFunction
    args: dict  # every argument except the launch config
    configs: list  # the configs the launcher may pick for these arguments (fixed first, then tuned)


_RECORDING: contextvars.ContextVar = contextvars.ContextVar("kernels_recording", default=None)


@contextlib.contextmanager
def recorded_launches():
    """Within this block, launchers append `Launch`es to the yielded list instead of launching."""
    launches: list[Launch] = []
    token = _RECORDING.set(launches)
    try:
        yield launches
    finally:
        _RECORDING.reset(token)


def record(name: str, kernel, args: dict, configs) -> bool:
    """Record a launch if recording (then the caller must not launch); False otherwise."""
    launches = _RECORDING.get()
    if launches is None:
        return False
    launches.append(Launch(name, kernel, dict(args), list(configs)))
    return True
