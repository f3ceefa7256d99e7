"""The mobile-ready bundle: `bundle/` (and `bundle.zip`) with the shipped artifacts, their manifest, labels and a
README showing how an Android app loads each one."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Optional

from edgepack.data.dataset import ArrayDataset
from edgepack.fileio import atomic_path, atomic_write_text
from edgepack.records import Artifact, Report
from edgepack.report.manifest import manifest

KOTLIN = {
    "pte": """\
```kotlin
// build.gradle: implementation("org.pytorch:executorch-android:<version matching {version}>")
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

val module = Module.load(context.filesDir.resolve("{file}").absolutePath)
val input = Tensor.fromBlob(pixels /* FloatArray, preprocessed as in manifest.json */, longArrayOf({shape}))
val logits = module.forward(EValue.from(input))[0].toTensor().dataAsFloatArray
```
""",
    "tflite": """\
```kotlin
// build.gradle: implementation("com.google.ai.edge.litert:litert:<version>")
import org.tensorflow.lite.Interpreter
import java.nio.ByteBuffer
import java.nio.ByteOrder

val interpreter = Interpreter(context.filesDir.resolve("{file}"), Interpreter.Options().setNumThreads({threads}))
{io}
```
""",
}

LITERT_FLOAT_IO = """val input = ByteBuffer.allocateDirect(4 * {count}).order(ByteOrder.nativeOrder())
pixels.forEach {{ input.putFloat(it) }}  // FloatArray, preprocessed as in manifest.json
val output = Array(1) {{ FloatArray({classes}) }}
interpreter.run(input.rewind(), output)"""

LITERT_INT8_IO = """// int8 model: quantize inputs with the scale/zero point in manifest.json, dequantize outputs
val input = ByteBuffer.allocateDirect({count}).order(ByteOrder.nativeOrder())
pixels.forEach {{ x -> input.put((Math.round(x / {in_scale}f) + {in_zp}).coerceIn(-128, 127).toByte()) }}
val raw = Array(1) {{ ByteArray({classes}) }}
interpreter.run(input.rewind(), raw)
val logits = raw[0].map {{ q -> (q - {out_zp}) * {out_scale}f }}"""


def write_bundle(report: Report, out: Path, calibration: Optional[ArrayDataset], threads: int) -> Path:
    """Copy the shipped artifacts into out/bundle with manifest.json, labels.txt, README.md; zip it atomically."""
    bundle_dir = out / "bundle"
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)
    shipped = [a for a in report.artifacts if a.name in report.shipping]
    for artifact in shipped:
        shutil.copy2(artifact.path, bundle_dir / Path(artifact.path).name)
    data = manifest(report, calibration)
    data["artifacts"] = [a for a in data["artifacts"] if a["shipping"]]
    atomic_write_text(bundle_dir / "manifest.json", json.dumps(data, indent=2) + "\n")
    if report.model.labels:
        atomic_write_text(bundle_dir / "labels.txt", "\n".join(report.model.labels) + "\n")
    atomic_write_text(bundle_dir / "README.md", bundle_readme(report, shipped, threads))
    zip_path = out / "bundle.zip"
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for f in sorted(bundle_dir.iterdir()):
                archive.write(f, f"bundle/{f.name}")
    return zip_path


def bundle_readme(report: Report, shipped: list[Artifact], threads: int) -> str:
    model = report.model
    lines = [f"# {model.model_name} for {report.target}", "",
             f"Built by edgepack {report.edgepack_version} from `{model.source}` on {report.created}.",
             "Files, shapes, dtypes, quantization parameters, preprocessing and sha256 are in `manifest.json`; "
             "class names, one per line, in `labels.txt`." if model.labels else
             "Files, shapes, dtypes, quantization parameters, preprocessing and sha256 are in `manifest.json`.",
             "", "## Preprocessing", "", "```json", json.dumps(model.preprocessing, indent=2), "```", ""]
    for artifact in shipped:
        name = Path(artifact.path).name
        lines += [f"## {name} ({artifact.runtime}, {artifact.precision})", "", artifact.scheme, ""]
        template = KOTLIN.get(artifact.format)
        if template is None:
            continue
        shape = artifact.inputs[0].shape if artifact.inputs else model.input_shapes[0]
        count = 1
        for d in shape:
            count *= int(d) if isinstance(d, int) else 1
        classes = artifact.outputs[0].shape[-1] if artifact.outputs else "N"
        io = ""
        if artifact.format == "tflite":
            i, o = artifact.inputs[0], artifact.outputs[0]
            io = (LITERT_INT8_IO.format(count=count, classes=classes, in_scale=i.scale, in_zp=i.zero_point,
                                        out_scale=o.scale, out_zp=o.zero_point)
                  if i.scale is not None else LITERT_FLOAT_IO.format(count=count, classes=classes))
        lines.append(template.format(file=name, shape=", ".join(f"{d}L" for d in shape), threads=threads,
                                     version=report.versions.get("executorch", ""), io=io))
    return "\n".join(lines) + "\n"
