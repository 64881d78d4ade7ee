"""One module per vendor. Each registers its kinds with ``tako.providers.registry`` and is
found through the ``tako.providers`` entry points; vendors never import each other."""
