"""TLS contexts: the listener's (HTTPS for clients) and the upstream pools' (HTTPS endpoints).

Both speak HTTP/1.1 only (ALPN ``http/1.1``) and TLS 1.2 or newer. An upstream context verifies
the endpoint's certificate and name by default, against the system's CA bundle or ``ca_file``;
``verify: false`` is for test rigs, never for traffic that matters. Errors (a missing or
unreadable file, a key that does not match its certificate) are raised as
:class:`~gatekeeper.errors.ConfigurationError` naming the file, so a bad configuration stops
the start (or a reload) instead of failing requests.
"""

from __future__ import annotations

import os
import ssl

from gatekeeper.errors import ConfigurationError

__all__ = ["client_context", "server_context"]

_ALPN = ["http/1.1"]


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The listener's context: ``cert_file`` (PEM, the chain) and ``key_file`` (PEM)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(_ALPN)
    for path in (cert_file, key_file):
        if not os.path.isfile(path):
            raise ConfigurationError(f"no such file: {path}")
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot use cert_file {cert_file} with key_file {key_file}: {exc}"
        ) from exc
    return context


def client_context(*, verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """An upstream pool's context (see the module docstring)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(_ALPN)
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except FileNotFoundError as exc:
            raise ConfigurationError(f"ca_file: no such file: {ca_file}") from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"ca_file: cannot load {ca_file}: {exc}") from exc
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
