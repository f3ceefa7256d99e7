"""This machine's NVIDIA GPUs as the cuda target needs them: whether one is there, its name and driver, and the GPU
memory a process holds. Read through NVML (`nvidia-ml-py`, in the `cuda` extra), else through `nvidia-smi`; nothing
here initialises CUDA or imports torch."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Optional

SMI_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    driver: str

    def describe(self) -> str:
        return f"GPU {self.index}: {self.name}, driver {self.driver}"


def find_gpu(index: int) -> tuple[Optional[Gpu], str]:
    """The GPU at `index`, or None and why it cannot be seen (no driver, no such index)."""
    nvml = _nvml()
    if nvml is not None:
        try:
            count = nvml.nvmlDeviceGetCount()
            if index >= count:
                return None, f"NVML sees {count} GPU(s); there is no GPU {index}"
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            return Gpu(index, _text(nvml.nvmlDeviceGetName(handle)), _text(nvml.nvmlSystemGetDriverVersion())), ""
        except Exception as exc:  # noqa: BLE001 - any NVML error means the GPU cannot be read here
            return None, f"NVML could not read GPU {index}: {exc}"
    rows = _smi(["--query-gpu=index,name,driver_version", "--format=csv,noheader"])
    if rows is None:
        return None, "no NVIDIA driver found (neither NVML nor nvidia-smi answers)"
    for row in rows:
        parts = [p.strip() for p in row.split(",")]
        if len(parts) == 3 and parts[0] == str(index):
            return Gpu(index, parts[1], parts[2]), ""
    return None, f"nvidia-smi lists {len(rows)} GPU(s); there is no GPU {index}"


def device_memory_used(index: int) -> Optional[int]:
    """Bytes in use on the whole GPU (every process), or None when it cannot be read."""
    nvml = _nvml()
    if nvml is not None:
        try:
            return int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index)).used)
        except Exception:  # noqa: BLE001 - unreadable memory is reported as unknown, not as zero
            return None
    rows = _smi(["-i", str(index), "--query-gpu=memory.used", "--format=csv,noheader,nounits"])
    return int(float(rows[0])) * 2**20 if rows else None


def process_memory(index: int, pid: int) -> Optional[int]:
    """Bytes of GPU memory the process `pid` holds on GPU `index` (its CUDA context included), or None when the driver
    does not list it (a container's own process IDs are not the driver's)."""
    nvml = _nvml()
    if nvml is not None:
        try:
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(nvml.nvmlDeviceGetHandleByIndex(index)):
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    return int(proc.usedGpuMemory)
        except Exception:  # noqa: BLE001 - unreadable memory is reported as unknown, not as zero
            return None
        return None
    for row in _smi(["-i", str(index), "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]) or ():
        parts = [p.strip() for p in row.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            return int(float(parts[1])) * 2**20
    return None


def _nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVML present but no driver: as if absent, so nvidia-smi is tried
        return None
    return pynvml


def _smi(args: list[str]) -> Optional[list[str]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=SMI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return [line for line in proc.stdout.splitlines() if line.strip()]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
