"""Model providers beyond the offline model, each registered in the ``atomic_vault.models``
entry-point group exactly like a third-party provider, each importing its SDK lazily."""
