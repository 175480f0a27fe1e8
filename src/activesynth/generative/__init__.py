"""Generative models of the pool: the VAE data manifold (Dai et al. 2022)."""

from activesynth.generative.manifold import Manifold, fit_manifold, load_manifold, manifold_for
from activesynth.generative.vae import ConvVAE, VAEConfig, train_vae

__all__ = [
    "ConvVAE",
    "Manifold",
    "VAEConfig",
    "fit_manifold",
    "load_manifold",
    "manifold_for",
    "train_vae",
]
