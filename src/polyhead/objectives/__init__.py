"""Multi-task objectives: loss weighting and gradient aggregation, picked by name from config."""

from polyhead.objectives.aggregation import AGGREGATORS, GradientAggregator
from polyhead.objectives.weighting import WEIGHTINGS, LossWeighting

__all__ = ["AGGREGATORS", "WEIGHTINGS", "GradientAggregator", "LossWeighting"]
