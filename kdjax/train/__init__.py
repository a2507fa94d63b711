"""Training: immutable state, compiled steps and epochs, the run loop."""

from kdjax.train.loop import train_and_evaluate  # noqa: F401
