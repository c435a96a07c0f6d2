"""``SecretsDirAuthenticator``: the built-in Ed25519 authenticator, fed from a secrets directory.

Everything on the wire is the built-in ``ed25519`` authenticator's (handshakes, sessions,
sealed frames, replay protection, signed member records, key rotation): a node using this one
and a node using ``ed25519`` with the same key and trust root are indistinguishable. Only where
the identity and the trust root come from differs (see :mod:`gridkv_auth_secretsdir.secrets`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from gridkv import ConfigError
from gridkv.security.ed25519 import Ed25519Authenticator
from gridkv.security.session import Handshake

from gridkv_auth_secretsdir.secrets import DirectoryKeysTrust, SecretsDir, directory_from_env

if TYPE_CHECKING:
    from gridkv import Options

__all__ = ["SecretsDirAuthenticator"]

#: The ``auth`` keys of the options this authenticator leaves aside: the directory says it all.
_UNUSED_AUTH_KEYS = ("key_file", "cluster_secret", "cluster_secret_file", "trusted_keys")


class SecretsDirAuthenticator(Ed25519Authenticator):
    """Ed25519 authentication with the node's key and the trust root read from a directory.

    :param options: the node's options (``local_node_id``, ``max_clock_drift``,
        ``auth.encrypt``; the other ``auth`` keys are not used).
    :param clock: the node's wall clock, in seconds.
    :param directory: the secrets directory; ``$GRIDKV_SECRETS_DIR`` (else
        ``/var/run/secrets/gridkv``) by default.
    :raises ConfigError: the directory or one of its items is missing, unreadable, open to
        others or malformed (the message names the file); or the node has no key of its own
        where the trust root names keys, or its ``<node id>.pub`` does not list its key.
    """

    name = "secretsdir"

    def __init__(
        self,
        options: Options,
        *,
        clock: Callable[[], float],
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        node_id = options.local_node_id
        secrets = SecretsDir(directory_from_env() if directory is None else directory)
        trust = secrets.trust()
        identity = secrets.identity(node_id)
        if isinstance(trust, DirectoryKeysTrust):
            if identity is None:
                raise ConfigError(
                    f"secrets directory {str(secrets.path)!r} has no key for node {node_id!r}: "
                    f"add {node_id}.key or node.key (`gridkv keys new --pair` makes one), the "
                    f"key its {node_id}.pub lists"
                )
            if identity.public_key not in trust.keys.get(node_id, ()):
                raise ConfigError(
                    f"{secrets.file(f'{node_id}.pub')!r} does not list the public key of this "
                    f"node's key ({identity.public_key_text}): its peers would refuse it"
                )
        # The built-in authenticator, given this identity inline (a fresh key each start
        # without one, enough under a cluster secret) and no trust root of the options'...
        auth = dict.fromkeys(_UNUSED_AUTH_KEYS, "") | {
            "key": identity.private_key_text if identity else "",
            "ca_file": "",
            "cert_file": "",
        }
        super().__init__(options.replace(auth=auth), clock=clock)
        #: The secrets directory the identity and the trust root come from.
        self.secrets = secrets
        # ...and then the directory's trust root, exactly where the built-in puts its own.
        self.sessions = Handshake(
            self.identity,
            trust,
            lambda: int(clock() * 1000),
            int(options.max_clock_drift * 1000),
            options.auth.encrypt,
        )
