"""The torch model: the recurrent layers of every cell and the language model around them.

How this folder works:
- layers.py makes a cell's training layer from its facts: torch's fused nn.LSTM/GRU/RNN
  where a cell names one, our own layers (own_layers.py: a window's input in one product,
  then the recurrence) for the others, and the parallel scan (scan.py) for cells whose gates
  read only the input. Each is tested against the cell's step (cells/), the one definition.
- language_model.py: embedding → layers → (attention.py: --attention's SHA-RNN block over
  the top layer's last M outputs, its memory the state's last part) → output layer;
  weights.py converts a model's weights to the step layout every other engine reads; ops.py
  runs a cell's step in torch.
- A new cell needs nothing here unless it trains faster with a kernel of its own.
"""
