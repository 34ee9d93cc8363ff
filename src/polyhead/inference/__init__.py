"""Inference: load a trained model and get every answer from one encoder pass."""

from .pipeline import Polyhead, analyze_file, load

__all__ = ["Polyhead", "analyze_file", "load"]
