"""Experiments over many runs: sweeps (ablate, combine, generalize), backends, tables and
charts computed from the run folders on disk, and the demo. No TensorFlow at import."""
