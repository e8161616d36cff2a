"""edgediff.export: a trained run -> ONNX (parity-gated) -> TensorRT engines, written as a bundle.

Import submodules directly; nothing here is imported eagerly.
"""
