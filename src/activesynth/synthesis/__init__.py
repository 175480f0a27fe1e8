"""Synthesis: mask perturbation, conditional generation and the quality of synthetic images.

- ``perturb``: replayable perturbations of (image, mask) pairs after Mahapatra et al. (MICCAI
  2018): boundary displacement with a periodic B-spline, the structure's intensity change, and
  flips / rotations / translations. Parameters are drawn once into JSON records, then applied
  deterministically.
- ``quality``: SSIM / PSNR to the source, Frechet distance and MMD on our own network's
  features, a real-vs-synthetic realism AUC, memorisation and label fidelity, gathered by
  ``quality_report``.

Import the submodules directly (``from activesynth.synthesis import perturb``); this package
imports nothing so that each part stays independent.
"""
