"""A residual-quantized autoencoder over item vectors (RQ-VAE, how TIGER builds semantic IDs).

    z = encoder(x);  r_1 = z;  e_l = nearest codeword of layer l to r_l;  r_{l+1} = r_l - e_l
    x^ = decoder(z + sg(sum_l e_l - z))         (straight-through)
    loss = |x - x^|^2 + sum_l ( |sg(r_l) - e_l|^2 + beta |r_l - sg(e_l)|^2 )

Each layer's codebook starts as k-means of the first encoder's residuals (FAISS), which keeps codewords
from dying at the start. An item's semantic ID is its L nearest-codeword tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recindex.quant.codebook import fit_level


@dataclass
class RQVAEResult:
    codes: np.ndarray  # (N, L)
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    reconstruction_error: float = 0.0  # mean squared error of the decoded vectors at the end


class RQVAE(nn.Module):
    def __init__(self, dim: int, k: int, layers: int, latent: int = 32, hidden: int = 128):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.codebooks = nn.Parameter(torch.zeros(layers, k, latent))

    def quantize(self, z: torch.Tensor):
        """z (B, latent) -> (sum of chosen codewords, codes (B, L), codebook + commitment terms)."""
        residual, total, codes = z, torch.zeros_like(z), []
        terms = []
        for words in self.codebooks:
            chosen = torch.cdist(residual, words).argmin(1)
            picked = words[chosen]
            terms.append((residual, picked))
            total = total + picked
            residual = residual - picked
            codes.append(chosen)
        return total, torch.stack(codes, 1), terms

    def forward(self, x: torch.Tensor, beta: float = 0.25):
        z = self.encoder(x)
        total, codes, terms = self.quantize(z)
        decoded = self.decoder(z + (total - z).detach())
        loss = F.mse_loss(decoded, x)
        for residual, picked in terms:
            loss = loss + F.mse_loss(picked, residual.detach()) + beta * F.mse_loss(residual, picked.detach())
        return loss, codes, decoded


def train_rq_vae(
    vectors: np.ndarray,
    k: int,
    layers: int,
    *,
    latent: int = 32,
    hidden: int = 128,
    epochs: int = 30,
    batch_size: int = 512,
    lr: float = 1e-3,
    seed: int = 0,
) -> RQVAEResult:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.as_tensor(np.ascontiguousarray(vectors, dtype=np.float32))
    model = RQVAE(x.shape[1], k, layers, latent, hidden)
    with torch.no_grad():  # k-means initialisation, layer by layer, of the untrained encoder's residuals
        residual = model.encoder(x)
        for layer in range(layers):
            words = torch.as_tensor(fit_level(residual.numpy()[:, None, :], k, seed=seed + layer)[0])
            model.codebooks.data[layer] = words
            residual = residual - words[torch.cdist(residual, words).argmin(1)]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    result = RQVAEResult(np.zeros((len(x), layers), np.int64))
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(x), batch_size):
            loss, _, _ = model(x[order[start : start + batch_size]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        result.losses.append(total / max(batches, 1))
    with torch.no_grad():
        _, codes, decoded = model(x)
    result.codes = codes.numpy().astype(np.int64)
    result.reconstruction_error = float(F.mse_loss(decoded, x))
    return result
