"""The one exception type the CLI turns into a one-line message."""

from __future__ import annotations


class LatentzooError(Exception):
    """A user-facing error: its message names the problem and the fix, in one line."""


class ContractError(LatentzooError):
    """Two components do not share a latent space, or a sampler cannot drive a prior."""


class RegistryError(LatentzooError):
    """A registry file is malformed or names something that does not exist."""


class WeightsError(LatentzooError):
    """A weights file is missing, truncated, or fails its sha256 check."""
