"""polyhead: one speech model, many answers."""

__version__ = "0.1.0"
