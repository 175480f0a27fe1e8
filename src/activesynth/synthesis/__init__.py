"""Synthesis: mask perturbation, conditional generation (``cgan``) and active synthesis."""
