"""GridKV authenticator plugin "secretsdir": Ed25519 identities from a secrets directory.

The node's key and the cluster's trust root are files of one directory
(``$GRIDKV_SECRETS_DIR``, else ``/var/run/secrets/gridkv``), as a Kubernetes ``Secret`` is
mounted: see :mod:`gridkv_auth_secretsdir.secrets` for the layout and the checks, and
:class:`SecretsDirAuthenticator` for how it builds on the built-in ``ed25519`` authenticator.
Importing this module is cheap (what a plugin's import must be): the authenticator and its
cryptography are imported when a node is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gridkv

if TYPE_CHECKING:
    from gridkv.security import Authenticator, AuthenticatorFactory

    from gridkv_auth_secretsdir.authenticator import SecretsDirAuthenticator
    from gridkv_auth_secretsdir.secrets import (
        CLUSTER_SECRET,
        DEFAULT_DIR,
        DIR_ENV,
        NODE_KEY,
        DirectoryKeysTrust,
        SecretsDir,
    )

__all__ = [
    "NAME",
    "SecretsDirAuthenticator",
    "SecretsDir",
    "DirectoryKeysTrust",
    "DIR_ENV",
    "DEFAULT_DIR",
    "NODE_KEY",
    "CLUSTER_SECRET",
    "gridkv_register_authenticators",
]

#: The name the authenticator is registered under.
NAME = "secretsdir"

_LAZY = {
    "SecretsDirAuthenticator": "gridkv_auth_secretsdir.authenticator",
    "SecretsDir": "gridkv_auth_secretsdir.secrets",
    "DirectoryKeysTrust": "gridkv_auth_secretsdir.secrets",
    "DIR_ENV": "gridkv_auth_secretsdir.secrets",
    "DEFAULT_DIR": "gridkv_auth_secretsdir.secrets",
    "NODE_KEY": "gridkv_auth_secretsdir.secrets",
    "CLUSTER_SECRET": "gridkv_auth_secretsdir.secrets",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gridkv_auth_secretsdir' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


@gridkv.hookimpl
def gridkv_register_authenticators(
    register: Callable[[str, AuthenticatorFactory], None],
) -> None:
    """The "secretsdir" authenticator."""

    def factory(options: gridkv.Options, *, clock: Callable[[], float]) -> Authenticator:
        from gridkv_auth_secretsdir.authenticator import SecretsDirAuthenticator

        return SecretsDirAuthenticator(options, clock=clock)

    register(NAME, factory)
