"""stylecap: train vision skills from text alone (CLOSE: Cross-modaL transfer On Semantic Embeddings)."""
__version__ = "0.3.0"
