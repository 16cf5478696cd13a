"""How charlstm looks on a terminal: stderr's rendering (the training display and summary,
`info`, `runs`, what sampling, evaluating and coding say, the units `visualize` finds, what the
server reports) plus the one writer of the product to stdout (stdout.py: plain text flushed as
it comes, quiet success when the reader goes away). Only cli/ uses it; the library never calls
it.

STYLE: rendering only; no command logic and no option declarations (those are cli/ and
charlstm.options). A new command's look goes in the module of its noun, or a new one; what
goes to stdout goes through stdout.py.
"""
