"""Reading text through a trained model: exact loss, dynamic evaluation, what units hold.

How this folder works:
- exact.py scores every token of a text once, the state carried (B parallel streams, each
  warmed on the tokens before its start, so it matches one sequential pass); `predictions`
  is the one count of scored tokens (evaluate, dynamic evaluation and the server's /score).
- dynamic.py keeps learning while it reads (every token scored before it is learnt from).
- visualize.py records what the cells hold by running each cell's own step over recording
  ops (model/ops.py), and ranks units against simple properties of the text; focus.py shows
  where --attention's head looks.
- Imports model/, data/ and cells/; nothing here prints (cli/ decides where results go).
"""
