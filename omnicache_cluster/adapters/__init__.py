"""Framework adapters: one framework per module, each imported lazily."""
