"""Synthesis: synthetic candidates for the pool and the records that travel with them.

- ``perturb``: replayable perturbations of (image, mask) pairs after Mahapatra et al. (MICCAI
  2018): boundary displacement with a periodic B-spline, the structure's intensity change, and
  flips / rotations / translations. Parameters are drawn once into JSON records, then applied
  deterministically.
- ``quality``: SSIM / PSNR to the source, Frechet distance and MMD on our own network's
  features, a real-vs-synthetic realism AUC, memorisation and label fidelity, gathered by
  ``quality_report``.
- ``candidates``: ``Candidates`` with provenance (source, generator, checkpoint hash,
  perturbation record, seed, round) and label cost; ``classic``: the classic-augmentation
  generator; ``cgan``: the conditional GAN of Mahapatra et al.

Import the submodules directly (``from activesynth.synthesis import perturb``); this package
imports nothing so that each part stays independent.
"""
