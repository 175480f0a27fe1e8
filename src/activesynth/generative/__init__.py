"""Generative models of the pool: the VAE data manifold (Dai et al. 2022).

Latent generators over (image, lumen mask) pairs for AISEL (GIN, a coupling flow, the VAE) live in
``generative.latent`` / ``gin`` / ``flow`` and their measures in ``generative.interpret``; they
are imported from there (not here) so that importing this package does not import FrEIA.
"""

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
