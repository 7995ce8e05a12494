"""Quantization shared by the families: residual k-means codebooks, semantic IDs (random, hierarchical
k-means, RQ-KMeans, RQ-VAE) and balanced assignment of items to tokens."""
