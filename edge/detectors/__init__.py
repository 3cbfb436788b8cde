"""Detection backends: ONNX models described by a profile, and the model-free motion backend."""
