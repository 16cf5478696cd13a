"""The command line: options, commands and their display; calls into the library."""
