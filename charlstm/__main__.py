"""`python -m charlstm` (and `torchrun -m charlstm`)."""

from charlstm.cli import main

if __name__ == "__main__":
    main()
