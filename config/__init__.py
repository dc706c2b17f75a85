"""Settings: one pydantic model per section, loaded from TOML plus BOTVISOR_* environment.

Imports nothing of ours (DESIGN.md: imports flow toward config).
"""

from config.errors import ConfigError
from config.settings import Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
