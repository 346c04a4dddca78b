"""Training, evaluation and prediction: what `cli.py` runs."""
