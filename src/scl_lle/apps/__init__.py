"""What users run on top of the engine: batch enhancement, video, ONNX export and the web server."""
