"""IMC2025 files, scene sampling and synthetic scenes."""
