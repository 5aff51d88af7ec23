"""Published constructor arguments -> our modules.

The parity fixtures and published checkpoints record a network as a class name plus the
keyword arguments its published constructor received. `build_published` turns that into
our module, whose state_dict layout equals the published one, so the published state
dict loads with a plain strict `load_state_dict`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import torch


class NotBuiltYet(LookupError):
    """The recorded network is one we do not implement (yet)."""


def _lazy(module: str, function: str) -> Callable[[dict[str, Any]], Any]:
    """A builder imported on first use; a module that does not exist yet means 'not built yet'."""

    def build(init: dict[str, Any]) -> Any:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            raise NotBuiltYet(f"{module} is not implemented yet") from None
        return getattr(mod, function)(init)

    return build


# Published network name (as in the fixtures' "network" field) -> builder.
PUBLISHED_NETWORKS: dict[str, Callable[[dict[str, Any]], torch.nn.Module]] = {
    "creps.Generator": _lazy("creps.compat.creps_g", "build_creps_generator"),
    "stylegan2.Generator": _lazy("creps.compat.stylegan2_g", "build_stylegan2_generator"),
    "stylegan3.Generator": _lazy("creps.compat.stylegan3_g", "build_stylegan3_generator"),
    "stylegan2.Discriminator": _lazy("creps.compat.discriminator", "build_stylegan2_discriminator"),
}


# Published network name -> our constructor's keyword arguments for its published kwargs.
PUBLISHED_KWARGS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "creps.Generator": _lazy("creps.compat.creps_g", "creps_generator_kwargs"),
    "stylegan2.Generator": _lazy("creps.compat.stylegan2_g", "stylegan2_generator_kwargs"),
    "stylegan3.Generator": _lazy("creps.compat.stylegan3_g", "stylegan3_generator_kwargs"),
    "stylegan2.Discriminator": _lazy("creps.compat.discriminator", "stylegan2_discriminator_kwargs"),
}


def published_kwargs(network: str, init: dict[str, Any]) -> dict[str, Any]:
    """Our constructor's keyword arguments (as given, defaults not filled in) for a published
    network name and its constructor kwargs; a ValueError names what does not translate."""
    try:
        translate = PUBLISHED_KWARGS[network]
    except KeyError:
        raise NotBuiltYet(f"{network} is not implemented yet") from None
    return translate(init)


def build_published(network: str, init: dict[str, Any]) -> torch.nn.Module:
    """Build our module for a published network name and its constructor kwargs."""
    try:
        builder = PUBLISHED_NETWORKS[network]
    except KeyError:
        raise NotBuiltYet(f"{network} is not implemented yet") from None
    return builder(init)
