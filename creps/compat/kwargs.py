"""Published constructor kwargs -> ours, the rule every compat builder follows.

The kwargs come as a top level plus nested dicts (`mapping_kwargs`, ...). Per group:
names we implement are renamed to our keywords; layout- or precision-only options are
dropped; options we do not implement are accepted only at their published default; a
missing required argument, a nested group that is not a dict and anything unknown is a
ValueError naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class Section:
    """How one group of published kwargs maps to our constructor's keywords."""

    names: Mapping[str, str]  # published name -> our keyword
    fixed: Mapping[str, Any] = field(default_factory=dict)  # accepted only at this published default
    ignored: frozenset[str] = frozenset()  # no effect on what is computed: dropped


def _check_fixed(network: str, where: str, value: Any, default: Any) -> None:
    if (list(value) if isinstance(value, (list, tuple)) else value) != default:
        raise ValueError(f"{network}: {where}={value!r} is not supported (only {default!r})")


def translate(network: str, init: Mapping[str, Any], required: Sequence[str], top: Section,
              nested: Mapping[str, Section]) -> dict[str, Any]:
    """Our constructor kwargs for the published kwargs `init` of `network` (named in errors):
    `top` describes the top level, `nested` each nested dict by its name."""
    missing = [key for key in required if key not in init]
    if missing:
        raise ValueError(f"{network}: missing argument(s): {', '.join(missing)}")
    groups = [("", top, {key: value for key, value in init.items() if key not in nested})]
    for name, section in nested.items():
        given = init.get(name) or {}
        if not isinstance(given, dict):
            raise ValueError(f"{network}: {name} must be a dict, got {type(given).__name__}")
        groups.append((f"{name}.", section, given))
    out: dict[str, Any] = {}
    unknown = []
    for prefix, section, given in groups:
        for key, value in given.items():
            if key in section.names:
                out[section.names[key]] = value
            elif key in section.fixed:
                _check_fixed(network, prefix + key, value, section.fixed[key])
            elif key not in section.ignored:
                unknown.append(prefix + key)
    if unknown:
        raise ValueError(f"{network}: unknown argument(s): {', '.join(sorted(unknown))}")
    return out
