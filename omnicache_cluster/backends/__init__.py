"""Storage backends: one per module, optional dependencies imported lazily."""
