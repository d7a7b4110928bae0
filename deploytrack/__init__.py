"""deploytrack: record builds and deployments, compute DORA metrics."""

__version__ = "0.1.0"
__all__ = ["__version__"]
