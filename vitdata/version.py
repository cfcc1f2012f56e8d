"""The one version string of vitdata (setup.py reads it from here)."""
__version__ = "0.1.0"
