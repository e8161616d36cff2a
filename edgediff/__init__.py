"""edgediff: train a DDPM epsilon network in PyTorch, export it, and sample on the edge with numpy.

Subpackages: ``edgediff.runtime`` (numpy + one engine), ``edgediff.train`` (torch),
``edgediff.export`` (ONNX, TensorRT, bundles) and ``edgediff.tools`` (CLI, benchmarks, plots).
"""

__version__ = "0.1.0"
