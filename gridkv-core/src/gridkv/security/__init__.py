"""The security layer: how a node proves who it is and checks every message it receives.

It sits between the cluster logic and the wire: every outbound message is wrapped by the
node's :class:`Authenticator` before it reaches a transport, and every inbound one unwrapped
(checked) before it is decoded. ``disable_auth = True`` selects :class:`NoAuthentication`;
other authenticators register through ``gridkv_register_authenticators``.
"""

from __future__ import annotations

from gridkv.security.base import Authenticator, AuthenticatorFactory
from gridkv.security.none import NoAuthentication

__all__ = ["Authenticator", "AuthenticatorFactory", "NoAuthentication"]
