"""edgepack: compress, export, quantize, verify, measure and budget-gate PyTorch models for edge targets.

Importing this package must stay cheap: no torch, onnxruntime, executorch or litert here.
"""

__version__ = "0.1.0"
