"""Reading text through a trained model: exact loss, dynamic evaluation, what units hold."""
