"""The local customer token issuer (`make token CUSTOMER=ada`).

It signs a JWT (ES256) with the key `make certs` wrote; Envoy's jwt_authn
verifies it at the public listener against the matching JWKS, checks the
issuer, the audience and the expiry, and passes the verified subject to the
services as x-shop-customer. In production an OIDC provider issues these
tokens instead and Envoy reads its JWKS: nothing else changes
(docs/security.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import jwt

from shopstack.pki import Certs, kid_of
from shopstack.topology import Security


def issue(
    certs: Certs,
    security: Security,
    subject: str,
    *,
    scopes: Iterable[str] = (),
    ttl_seconds: float | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """A signed token for subject. The keyword arguments exist for the
    security tests, which need expired tokens and foreign issuers and audiences."""
    if not subject:
        raise ValueError("a token needs a subject (the customer id)")
    issued = time.time() if now is None else now
    ttl = security.token_ttl_seconds if ttl_seconds is None else ttl_seconds
    claims: dict[str, object] = {
        "iss": issuer or security.token_issuer,
        "aud": audience or security.token_audience,
        "sub": subject,
        "iat": int(issued),
        "nbf": int(issued) - 5,
        "exp": int(issued + ttl),
        "jti": uuid.uuid4().hex,
    }
    scope = " ".join(scopes)
    if scope:
        claims["scope"] = scope
    return jwt.encode(claims, certs.jwt_key.read_bytes(), algorithm="ES256", headers={"kid": kid_of(certs)})
