"""Inference: load a trained model and get every answer from one encoder pass."""

from .diarize import analyze_file
from .pipeline import Polyhead, load

__all__ = ["Polyhead", "analyze_file", "load"]
