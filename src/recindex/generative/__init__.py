"""Generative retrieval: semantic IDs for items and the models that generate them."""
