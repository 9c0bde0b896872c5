"""Export pipeline: checkpoint -> ONNX -> TensorRT (python -m export.to_onnx / export.to_trt)."""
