"""Datasets vitdata can generate itself."""
