"""polyhead: one speech model, many answers."""

__version__ = "0.1.0"


def load(path, quantize=None):
    """Load a model for one-pass analysis: a trained one (run, checkpoint or `polyhead
    export` folder), or plain Whisper by name (``"whisper-tiny.en"``, any name in `polyhead
    models list`) or transformers Whisper folder: its pretrained decoder is the only head.
    ``quantize="int8"`` quantises a PyTorch model dynamically."""
    from .inference import load as _load

    return _load(path, quantize)
