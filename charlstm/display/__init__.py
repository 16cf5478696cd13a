"""How charlstm looks on a terminal: the training display and summary, `info`, `runs`, the
units `visualize` finds, what the server reports. Only cli/ uses it; everything here writes to
stderr (or to an image file), never to stdout.

STYLE: rendering only; no command logic and no option declarations (those are cli/ and
charlstm.options). A new command's look goes in the module of its noun, or a new one.
"""
