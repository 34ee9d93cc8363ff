"""polyhead: one speech model, many answers."""

__version__ = "0.1.0"


def load(path, quantize=None):
    """Load a trained model (run, checkpoint or `polyhead export` folder) for one-pass
    analysis; ``quantize="int8"`` quantises a PyTorch checkpoint dynamically."""
    from .inference import load as _load

    return _load(path, quantize)
