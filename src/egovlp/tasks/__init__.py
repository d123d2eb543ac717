"""Tasks: each is a small class (data, batch -> losses, evaluation) that runs on the shared training loop."""
