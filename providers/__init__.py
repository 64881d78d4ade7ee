"""Vendor adapters. Each module registers its kinds with ``providers.registry``."""
