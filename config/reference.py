"""docs/CONFIGURATION.md, generated from the settings models: `markdown()`.

`python scripts/config_reference.py` rewrites the file; tests/unit/test_config_reference.py
fails when the file and the models drift apart.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from config.settings import ENV_PREFIX, Settings

HEADER = """\
# Configuration reference

<!-- Generated from config/settings.py by `python scripts/config_reference.py`;
     do not edit by hand: tests/unit/test_config_reference.py checks it is current. -->

botvisor reads a TOML file (`--config FILE`, else `$BOTVISOR_CONFIG`, else
`./botvisor.toml` if present), then environment variables `BOTVISOR_SECTION__KEY`
(which win). Unknown keys and bad values stop every command with exit status 78 and a
message naming the key, where its value came from and what is allowed. A running daemon
re-reads the file on SIGHUP / `botvisor reload` and keeps the old settings if the new ones
are invalid. Secrets (marked 🔒) are never printed or logged.

Nested values (the `ratelimit.per_*` rates) are inline tables in TOML, e.g.
`per_bot = { limit = 30, period_s = 1.0 }`, and `BOTVISOR_RATELIMIT__PER_BOT__LIMIT=1000`
in the environment.
"""


def _type(field: FieldInfo) -> str:
    ann = field.annotation
    text = getattr(ann, "__name__", None) if isinstance(ann, type) else None
    if text is None:
        text = str(ann).replace("typing.", "").replace("pydantic.types.", "")
    text = text.replace("NoneType", "None").replace("pathlib.Path", "path")
    text = text.replace("SecretStr", "secret string").replace(" | ", " or ")
    text = text.replace("Literal[", "one of [")
    return re.sub(r"\bconfig\.(?:sections\.)?\w+\.", "", text)  # a model's module path


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed (see meaning)"
    value = field.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, BaseModel):
        inner = ", ".join(f"{k} = {v!r}" for k, v in value.model_dump().items())
        return f"`{{ {inner} }}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def _limits(field: FieldInfo) -> str:
    parts = []
    for meta in field.metadata:
        for name, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            bound = getattr(meta, name, None)
            if bound is not None:
                parts.append(f"{sign} {bound}")
        if getattr(meta, "min_length", None):
            parts.append(f"length ≥ {meta.min_length}")
    return "; ".join(parts)


def _row(section: str, key: str, field: FieldInfo) -> str:
    env = f"{ENV_PREFIX}{section.upper()}__{key.upper()}"
    secret = " 🔒" if "SecretStr" in str(field.annotation) else ""
    meaning = (field.description or "").replace("|", "\\|")
    limits = _limits(field)
    if limits:
        meaning += f" ({limits})"
    return f"| `{key}`{secret} | {_type(field)} | {_default(field)} | `{env}` | {meaning} |"


def markdown() -> str:
    out = [HEADER]
    for section, field in Settings.model_fields.items():
        model: Any = field.annotation
        out.append(f"## [{section}]\n")
        doc = (model.__doc__ or "").strip()
        if doc and not doc.startswith("A base class"):
            out.append(doc + "\n")
        out.append("| key | type | default | environment | meaning |")
        out.append("|---|---|---|---|---|")
        out.extend(_row(section, key, sub) for key, sub in model.model_fields.items())
        out.append("")
    return "\n".join(out).rstrip() + "\n"
