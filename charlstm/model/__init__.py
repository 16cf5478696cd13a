"""The torch model: the recurrent layers of every cell and the language model around them."""
