"""recindex: the retrieval stage of a recommender system."""

__version__ = "0.1.0"
