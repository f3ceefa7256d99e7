"""`edgepack targets`: the bundled targets and whether each runtime can run on this machine."""

from __future__ import annotations

from typing import Any

import click


@click.command("targets")
def command() -> None:
    """List the bundled targets and whether each runtime can run on this machine."""
    from edgepack.cli.output import Output
    from edgepack.config import bundled_target_files, parse_target
    from edgepack.runtimes import get_runtime

    output = Output()
    for _name, path in sorted(bundled_target_files().items()):
        target = parse_target(path)
        output.result(f"{target.name}: {target.description}")
        output.result(f"  precision {target.precision}, {target.threads} thread(s), default runtime(s): "
                      f"{', '.join(target.default_runtimes)}")
        for settings in target.runtimes:
            runtime = get_runtime(settings.name)
            missing = runtime.missing()
            state = "ready" if not missing else "unavailable: " + "; ".join(missing)
            cannot_measure = None if missing else runtime.measuring_unavailable(_measuring_device(target.device))
            if cannot_measure:
                state = (f"builds here, cannot measure on {target.device}: {cannot_measure} (--device none builds and "
                         f"checks numerics on the CPU)")
            output.result(f"  - {settings.name}: {state} ({capabilities(runtime)})")
    output.result("Use --target NAME, or --target path/to/board.yaml for your own target file.")


def _measuring_device(device: str) -> str:
    """The device a runtime is asked about: a phone is checked when a build starts (adb), not here."""
    if device == "gpu":
        return "gpu:0"
    return "host" if device.startswith("adb") or device == "none" else device


def capabilities(runtime: Any) -> str:
    """What a runtime declares, in words: its file, where its int8 comes from, QAT, phone measurement."""
    source = "fp32 file" if runtime.int8_from == "fp32" else "eager model"
    parts = [f".{runtime.file_format}", "/".join(runtime.precisions), f"int8 from the {source}",
             "QAT" if runtime.supports_qat else "no QAT"]
    if runtime.measured_on == "gpu":
        parts.append("measured on an NVIDIA GPU")
    else:
        parts.append(f"phone runner {runtime.phone_runner}" if runtime.phone_runner else "host measurement only")
    return ", ".join(parts)
