"""Settings: one pydantic model per section, loaded from TOML plus BOTVISOR_* environment.

Imports nothing of ours (imports flow toward config).
"""

from config.errors import ConfigError
from config.loading import config_path, load_settings
from config.settings import ENV_PREFIX, Settings

__all__ = ["ENV_PREFIX", "ConfigError", "Settings", "config_path", "load_settings"]
