"""memposer: scene clustering and camera poses for unordered photo collections (IMC2025)."""
__version__ = "0.1.0"
