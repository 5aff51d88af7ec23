"""Published constructor arguments -> our modules.

The parity fixtures and published checkpoints record a network as a class name plus the
keyword arguments its published constructor received. `build_published` turns that into
our module, whose state_dict layout equals the published one, so the published state
dict loads with a plain strict `load_state_dict`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch


class NotBuiltYet(LookupError):
    """The recorded network is one we do not implement (yet)."""


def _creps_generator(init: dict[str, Any]) -> torch.nn.Module:
    from creps.compat.creps_g import build_creps_generator

    return build_creps_generator(init)


def _stylegan2_discriminator(init: dict[str, Any]) -> torch.nn.Module:
    from creps.compat.discriminator import build_stylegan2_discriminator

    return build_stylegan2_discriminator(init)


# Published network name (as in the fixtures' "network" field) -> builder.
PUBLISHED_NETWORKS: dict[str, Callable[[dict[str, Any]], torch.nn.Module]] = {
    "creps.Generator": _creps_generator,
    "stylegan2.Discriminator": _stylegan2_discriminator,
}


def build_published(network: str, init: dict[str, Any]) -> torch.nn.Module:
    """Build our module for a published network name and its constructor kwargs."""
    try:
        builder = PUBLISHED_NETWORKS[network]
    except KeyError:
        raise NotBuiltYet(f"{network} is not implemented yet") from None
    return builder(init)
