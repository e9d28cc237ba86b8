"""driftrec: an LLM-native recommender with drifting long-term profiles and short-term sessions."""

__version__ = "0.1.0"
