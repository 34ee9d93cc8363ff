"""Model: encoders, heads and the multi-task model that joins them."""

from . import decoder  # noqa: F401  (register the Whisper decoder head)
from .encoders import ENCODERS, Encoder
from .heads import HEADS, Head
from .multitask import MultiTaskModel

__all__ = ["ENCODERS", "HEADS", "Encoder", "Head", "MultiTaskModel"]
