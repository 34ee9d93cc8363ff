"""polyhead: one speech model, many answers."""

__version__ = "0.1.0"


def load(path):
    """Load a trained model (run folder or checkpoint folder) for one-pass analysis."""
    from .inference import load as _load

    return _load(path)
