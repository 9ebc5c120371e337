"""One module per model family; each defines ``CARDS``, a tuple of ``ModelCard`` (found by the registry)."""
