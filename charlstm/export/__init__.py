"""A model taken out of torch: the model file's weights, ONNX, the browser page.

How this folder works:
- trace.py turns a cell's step (cells/) into a Plan, a JSON-able list of operations; every
  engine that is not torch or numpy interprets that plan, so no file here names a cell.
- convert.py: a trained model ↔ the step layout of model.safetensors (formats/model_file.py).
- onnx_graph.py maps a plan to ONNX nodes; playground.py embeds the plans and the weights in
  one page, which playground.js interprets (a restatement in JavaScript, and it says so).
- A new target: a file here reading plans from trace.py; never a copy of a cell.
"""
