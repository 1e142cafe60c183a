"""Configuration: `load_settings()` reads the environment; see settings.py for every variable."""
from config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
