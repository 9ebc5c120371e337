"""The evidence behind a verdict: per-image predictions, flips and McNemar, fidelity, comparing runs."""
