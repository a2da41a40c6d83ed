"""rekit: sentence-level relation extraction, from a labeled file to a K-fold ensemble."""

__version__ = "0.1.0"
