"""Which device a variant's model runtime can use here, and why not the GPU: for operators.

`dalston serve` logs it at start (`engine_device engine_id=whisper-base device=cuda count=1 ...` or
`device=cpu reason=no_driver ...`) and `dalston doctor` prints it. WHY a module of its own: the
facts that decide it (is the NVIDIA driver's libcuda.so.1 loadable from this process's library
path, what the runtime itself reports, how the runtime was built) are the same for both, and a
Nix-built image differs from a pip install exactly there: Nix's glibc ignores /etc/ld.so.cache, so
the driver is found only through LD_LIBRARY_PATH (docs/NIX.md, "GPU at run time").
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass
from importlib import metadata

from dalston.spec import EngineSpec

DRIVER_LIBRARY = "libcuda.so.1"


@dataclass(frozen=True)
class DeviceReport:
    """What one model runtime sees. `reason` (cpu only) is a token; `detail` says it in words."""

    runtime: str  # "ctranslate2" | "torch" | "none"
    runtime_version: str
    device: str  # "cuda" | "cpu"
    count: int
    reason: str = ""
    detail: str = ""
    cuda_build: str = ""  # torch: the CUDA version it was built for ("" = CPU-only build)

    def fields(self) -> dict[str, str]:
        out = {"device": self.device}
        if self.device == "cuda":
            out["count"] = str(self.count)
        else:
            out["reason"] = self.reason
        out["runtime"] = self.runtime
        if self.runtime_version:
            out["runtime_version"] = self.runtime_version
        return out


def runtime_for(spec: EngineSpec) -> str:
    """The library that runs the variant's model: ctranslate2 (faster-whisper), torch (NeMo), none."""
    kind = spec.runtime.kind if spec.runtime is not None else None
    return {"faster-whisper": "ctranslate2", "nemo": "torch"}.get(kind or "", "none")


def version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def driver_loadable() -> tuple[bool, str]:
    """(True, "") if the dynamic loader finds libcuda.so.1 on this process's library path, else (False, why)."""
    try:
        ctypes.CDLL(DRIVER_LIBRARY)
    except OSError as exc:
        return False, str(exc)
    return True, ""


def library_path() -> str:
    return os.environ.get("LD_LIBRARY_PATH", "")


def _cpu(runtime: str, version: str, reason: str, detail: str, cuda_build: str = "") -> DeviceReport:
    return DeviceReport(runtime, version, "cpu", 0, reason, detail, cuda_build)


def probe(runtime: str) -> DeviceReport:
    """Ask the runtime how many CUDA devices it sees; explain a zero."""
    if runtime == "none":
        return _cpu("none", "", "no_model", "this variant runs no model (CPU only)")
    if runtime == "ctranslate2":
        version = version_of("ctranslate2")
        try:
            import ctranslate2

            count = int(ctranslate2.get_cuda_device_count())
        except Exception as exc:  # noqa: BLE001 - any failure to ask means "no GPU here", with the reason
            return _cpu(runtime, version, "runtime_error", f"ctranslate2: {exc}")
        cuda_build = ""
    elif runtime == "torch":
        version = version_of("torch")
        try:
            import torch

            cuda_build = torch.version.cuda or ""
            count = int(torch.cuda.device_count()) if cuda_build else 0
        except Exception as exc:  # noqa: BLE001
            return _cpu(runtime, version, "runtime_error", f"torch: {exc}")
        if not cuda_build:
            return _cpu(runtime, version, "cpu_build", f"torch {version} is a CPU-only build")
    else:
        raise ValueError(f"unknown runtime {runtime!r}")
    if count > 0:
        return DeviceReport(runtime, version, "cuda", count, cuda_build=cuda_build)
    loadable, why = driver_loadable()
    if not loadable:
        return _cpu(runtime, version, "no_driver",
                    f"{DRIVER_LIBRARY} not loadable ({why}); LD_LIBRARY_PATH={library_path() or '(unset)'}",
                    cuda_build)
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"))
    return _cpu(runtime, version, "no_device", f"driver loaded but no CUDA device visible (NVIDIA_VISIBLE_DEVICES/"
                f"CUDA_VISIBLE_DEVICES={visible})", cuda_build)


def log_line(spec: EngineSpec, report: DeviceReport, weights: str) -> str:
    """`engine_device engine_id=... device=... (count=N | reason=...) runtime=... library_path=... weights=...`:
    what `dalston doctor` prints, in one line at start (`weights`: how they were checked)."""
    fields = {"engine_id": spec.id, **report.fields(), "library_path": library_path() or "-", "weights": weights,
              "python": platform.python_version(), "dalston": version_of("dalston") or "-"}
    return "engine_device " + " ".join(f"{k}={v}" for k, v in fields.items())
