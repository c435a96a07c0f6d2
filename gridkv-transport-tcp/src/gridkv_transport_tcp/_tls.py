"""The tcp transport's TLS: the server and client contexts ``network.ssl`` describes."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from gridkv.base.errors import ConfigError

if TYPE_CHECKING:
    from gridkv.base.options import SslOptions

__all__ = ["ssl_contexts"]


def ssl_contexts(options: SslOptions) -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
    """The (server, client) TLS contexts ``network.ssl`` describes; ``None`` when TLS is off.

    Both present this node's certificate; with ``verify_peer`` both require the peer's and
    check it against ``ca_file`` (mutual TLS). TLS 1.2 is the oldest version accepted.

    :raises ConfigError: a certificate, key or CA file cannot be loaded; the message names it.
    """
    if not options.enabled:
        return None
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for context in (server, client):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _load(context.load_cert_chain, "cert_file", options.cert_file, options.key_file or None)
        if options.verify_peer:
            context.verify_mode = ssl.CERT_REQUIRED
            if options.ca_file:
                _load(context.load_verify_locations, "ca_file", options.ca_file)
            else:
                context.load_default_certs(
                    ssl.Purpose.CLIENT_AUTH if context is server else ssl.Purpose.SERVER_AUTH
                )
    client.check_hostname = options.verify_peer and options.check_hostname
    if not options.verify_peer:
        client.verify_mode = ssl.CERT_NONE
    return server, client


def _load(method: Any, key: str, *args: Any) -> None:
    try:
        method(*args)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"config key 'network.ssl.{key}': cannot load {args[0]!r}: {exc}"
        ) from None
