"""Synthetic candidates for the pool: mask perturbation, conditional generation, classic
augmentation, and the records (provenance, label cost) that travel with every synthetic item."""
