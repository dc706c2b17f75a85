"""Settings: one pydantic model per section, loaded from TOML plus BOTVISOR_* environment.

Imports nothing of ours (imports flow toward config).
"""

from config.errors import ConfigError
from config.settings import ENV_PREFIX, Settings, config_path, load_settings

__all__ = ["ENV_PREFIX", "ConfigError", "Settings", "config_path", "load_settings"]
