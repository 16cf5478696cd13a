"""A model taken out of torch: the model file's weights, ONNX, the browser page."""
