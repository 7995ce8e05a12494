"""MFLI: a multifaceted learnable index (residual codes learned with the embeddings, served by walking
them, updated in real time)."""
