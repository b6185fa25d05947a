"""`spc-train recipe-help`: every recipe section and field with its default and help text, the way `trl sft --help`
lists SFTConfig's. Any of them can be set in the recipe YAML or overridden as `--section.field VALUE`."""

from __future__ import annotations

import dataclasses
import textwrap

from .configs import SECTIONS

WIDTH = 100


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return repr(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return repr(field.default_factory())
    return "required"


def _section_class(name: str):
    if name == "training":
        from trl import SFTConfig

        return SFTConfig
    return SECTIONS[name]


def field_lines(name: str) -> list[str]:
    """The fields of one section: `--section.field (default)` and its help text, indented."""
    cls = _section_class(name)
    lines = [f"{name}: {(cls.__doc__ or '').strip().splitlines()[0]}"]
    for field in dataclasses.fields(cls):
        if not field.init or field.name.startswith("_"):
            continue
        lines.append(f"  --{name}.{field.name}  (default {_default(field)})")
        text = " ".join(str(field.metadata.get("help", "")).split())
        lines += textwrap.wrap(text, WIDTH, initial_indent="      ", subsequent_indent="      ")
    return lines


def recipe_help(section: str | None = None) -> str:
    """One section's fields, or every section's but `training` (TRL's SFTConfig: hundreds of fields), which is
    named with the command that lists it."""
    if section is not None:
        return "\n".join(field_lines(section))
    lines = []
    for name in SECTIONS:
        if name == "training":
            lines += [
                "training: TRL's SFTConfig, as `trl sft` takes it (`spc-train recipe-help training` lists it)",
                "",
            ]
        else:
            lines += [*field_lines(name), ""]
    return "\n".join(lines).rstrip()
