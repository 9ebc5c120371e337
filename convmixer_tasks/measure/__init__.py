"""The conditions a figure was measured in: quiet device, energy, fingerprint, change points."""
