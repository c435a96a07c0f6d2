"""The quic transport's TLS: the configurations ``network.ssl`` describes; dialler checks.

QUIC is always TLS 1.3, and this transport always mutual: both sides present their node
certificate and check the other's against ``network.ssl.ca_file``. A peer is known by the node
id its certificate names, not by the host it was reached at (the node id binding is the
authenticator's, :meth:`~gridkv.transport.base.Handshake.tls_peer`), so
``network.ssl.check_hostname`` does not apply.

aioquic checks the server's certificate chain on the dialling side. On the accepting side it
asks for the dialler's certificate only through a private switch and checks only that the
dialler holds the key; :func:`check_dialler` checks the chain, once the handshake is done.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import AlertBadCertificate, AlertCertificateExpired, verify_certificate
from gridkv.base.errors import AuthenticationError, ConfigError

if TYPE_CHECKING:
    from cryptography import x509
    from gridkv.base.options import SslOptions

__all__ = [
    "ALPN",
    "CERTS_COMMAND",
    "IDLE_TIMEOUT",
    "KEEPALIVE_FRACTION",
    "check_dialler",
    "configurations",
]

#: The ALPN protocol both sides must name.
ALPN = "gridkv"
#: The command that writes a cluster's certificates (named by the errors that need them).
CERTS_COMMAND = "gridkv certs create --out DIR --nodes n1,n2,n3"
#: Seconds a QUIC connection may go without a packet before either side drops it (the
#: smaller of both sides' counts); dialled connections send a PING after a third of it
#: without a packet (:data:`KEEPALIVE_FRACTION`), so only a peer that went silent hits it.
#:
#: Fixed, not a ``network`` option: ``NetworkOptions`` has no time-based idle or keep-alive
#: setting for it to follow (the tcp transport keeps a connection until it is closed or cut;
#: ``network.max_idle`` counts pooled connections), and neither figure decides anything a
#: user tunes. A vanished peer's link is cut long before it: once anything sent to it
#: waits unacknowledged for ``network.write_timeout`` (SWIM probes every member every few
#: seconds), or a request times out with nothing heard. The idle time-out only reclaims the
#: acceptor's state of a dialler gone without a word, and the PING keeps a quiet link and
#: its NAT binding alive: at most 30 s of quiet (a PING after 20 s, looked for every 10 s)
#: is within the UDP binding lifetime of common NATs.
IDLE_TIMEOUT = 60.0
#: The fraction of the idle time-out after which a quiet dialled link sends a PING.
KEEPALIVE_FRACTION = 1 / 3


def _missing(what: str) -> ConfigError:
    return ConfigError(
        f"config key 'network.ssl.{what}': the quic transport is mutual TLS and needs this "
        f"node's certificate, its key and the cluster CA (network.ssl.enabled, cert_file, "
        f"key_file, ca_file); `{CERTS_COMMAND}` writes DIR/ca.crt, DIR/<node>.crt and "
        "DIR/<node>.key"
    )


def configurations(
    options: SslOptions, *, max_frame_bytes: int, idle_timeout: float = IDLE_TIMEOUT
) -> tuple[QuicConfiguration, QuicConfiguration]:
    """The (server, client) QUIC configurations of ``network.ssl``.

    :param idle_timeout: seconds without a packet before a connection is dropped
        (:data:`IDLE_TIMEOUT`; tests make it short).

    :raises ConfigError: TLS is off, a file is missing or cannot be loaded, or
        ``verify_peer`` is off (a QUIC node always checks its peers); the message names the
        key and the command that makes the files.
    """
    if not options.enabled:
        raise _missing("enabled")
    if not options.cert_file:
        raise _missing("cert_file")
    if not options.ca_file:
        raise _missing("ca_file")
    if not options.verify_peer:
        raise ConfigError(
            "config key 'network.ssl.verify_peer': the quic transport always checks its "
            "peers' certificates (mutual TLS); it cannot be turned off"
        )
    made = []
    for is_client in (False, True):
        configuration = QuicConfiguration(
            is_client=is_client,
            alpn_protocols=[ALPN],
            idle_timeout=idle_timeout,
            verify_mode=ssl.CERT_REQUIRED,
            cafile=options.ca_file,
            # Flow control: a stream may carry a whole frame, a connection a few in flight.
            max_stream_data=max(1 << 20, max_frame_bytes + 64),
            max_data=max(4 << 20, 2 * (max_frame_bytes + 64)),
        )
        _load(configuration.load_cert_chain, "cert_file", options.cert_file, options.key_file)
        _load(_readable, "ca_file", options.ca_file)
        made.append(configuration)
    return made[0], made[1]


def _readable(path: str) -> None:
    with open(path, "rb") as file:
        if b"-----BEGIN CERTIFICATE-----" not in file.read():
            raise ValueError("no PEM certificate in it")


def _load(method: Any, key: str, *args: Any) -> None:
    try:
        method(*(a for a in args if a))
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"config key 'network.ssl.{key}': cannot load {args[0]!r}: {exc}"
        ) from None


def check_dialler(
    certificate: x509.Certificate | None, chain: list[x509.Certificate], ca_file: str
) -> None:
    """Check a dialler's certificate against the cluster CA (the accepting side's check).

    :raises AuthenticationError: no certificate, or one the CA did not issue, or expired.
    """
    if certificate is None:
        raise AuthenticationError("the dialler presented no certificate (mutual TLS)")
    try:
        verify_certificate(certificate=certificate, chain=chain, cafile=ca_file)
    except (AlertBadCertificate, AlertCertificateExpired) as exc:
        raise AuthenticationError(f"the dialler's certificate is refused: {exc}") from None
