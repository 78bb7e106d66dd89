"""The shop's local certificate authority and token signing key (`make certs`).

One CA signs every certificate of a run directory:

- edge: the server certificate of Envoy's public listener (DNS localhost and
  envoy, IP 127.0.0.1, and Envoy's host address in a hosts variant), no
  identity;
- one certificate per identity, with its SPIFFE-style URI SAN
  spiffe://<trust domain>/<name>: every service (catalog, inventory, payments,
  orders, reflection; the implementations of a service share its identity),
  envoy (what Envoy presents to the services and serves on the internal
  listener) and operator (the people and tools that import stock, run the
  contract suites and the bench). Each is good for both ends of a TLS
  connection (serverAuth and clientAuth): a service serves with it, and orders
  calls the internal listener with it;
- jwt.key (the customer token issuer's signing key, ES256) and jwks.json (its
  public half, which Envoy's jwt_authn reads);
- page-token.key: what signs the catalog's ListProducts page tokens. Every
  catalog replica keeps its own copy of the database, so without one shared
  key a page token from one replica would be refused by the next
  (SHARED_KEYS; `make test-hosts` runs two replicas).

Keys never leave the run directory (0600, never committed). Re-running
`make certs` rotates: a new key and certificate for every identity and a new
token key; the CA is kept, so what trusts it keeps trusting, unless its
directory is removed. Processes read their files at start-up, so a running
stack picks up rotated files after `make down && make up`.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# A leaf lives a month and the CA ten years: rotation is `make certs`.
LEAF_DAYS = 30
CA_DAYS = 3650
EDGE = "edge"
ENVOY = "envoy"
OPERATOR = "operator"
# Secrets every replica of a service must share, beside its certificate:
# identity -> (file in the certificates directory, the setting naming it).
SHARED_KEYS = {"catalog": ("page-token.key", "SHOP_PAGE_TOKEN_KEY_FILE")}


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, as file paths."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    """The files of one run directory's CA, by what they are for."""

    directory: Path
    trust_domain: str

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def jwt_key(self) -> Path:
        return self.directory / "jwt.key"

    @property
    def jwks(self) -> Path:
        return self.directory / "jwks.json"

    def pair(self, name: str) -> Pair:
        return Pair(self.directory / f"{name}.crt", self.directory / f"{name}.key")

    def spiffe_id(self, name: str) -> str:
        return f"spiffe://{self.trust_domain}/{name}"

    def shared_key(self, name: str) -> Path:
        """The shared secret of an identity in SHARED_KEYS."""
        return self.directory / SHARED_KEYS[name][0]

    def exists(self, identities: Iterable[str]) -> bool:
        files = [self.ca, self.ca_key, self.jwt_key, self.jwks, *self.pair(EDGE).__dict__.values()]
        files += [self.shared_key(name) for name in SHARED_KEYS]
        for name in identities:
            files.extend(self.pair(name).__dict__.values())
        return all(path.exists() for path in files)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write then rename, so a reader never sees half a file; keys are 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(certs: Certs, common_name: str = "shop local CA") -> None:
    """A new self-signed CA (key and certificate), replacing any there is."""
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    certs.directory.mkdir(parents=True, exist_ok=True)
    _write(certs.ca_key, _key_bytes(key), private=True)
    _write(certs.ca, _pem(cert), private=False)


def _san(name: str) -> x509.GeneralName:
    """An IP address SAN for an address, a DNS name SAN for anything else."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(certs: Certs, name: str, *, dns: Iterable[str] = (), uri: str | None = None) -> Pair:
    """A key and a certificate signed by the CA, for both TLS ends.

    Every certificate names localhost and 127.0.0.1 (`make up` runs
    everything on loopback) plus `dns`: the names Docker Compose reaches it
    by and, in a hosts variant (deploy/hosts.toml), the addresses of its
    hosts, which clients that dial an address check it against. `uri` is the
    SPIFFE-style identity, if it has one.
    """
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _key()
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    sans.extend(_san(d) for d in dns if d not in {"localhost", "127.0.0.1"})
    if uri:
        sans.append(x509.UniformResourceIdentifier(uri))
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pair = certs.pair(name)
    _write(pair.key, _key_bytes(key), private=True)
    _write(pair.cert, _pem(cert), private=False)
    return pair


def make_token_key(certs: Certs) -> None:
    """A new ES256 signing key for customer tokens, and its JWKS for Envoy."""
    from jwt.algorithms import ECAlgorithm

    key = _key()
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": _kid(key), "alg": "ES256", "use": "sig"})
    _write(certs.jwt_key, _key_bytes(key), private=True)
    _write(certs.jwks, (json.dumps({"keys": [jwk]}, indent=2) + "\n").encode(), private=False)


def _kid(key: ec.EllipticCurvePrivateKey) -> str:
    """The key id: a short hash of the public key, so a rotated key gets a new one."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(
        key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return digest.finalize().hex()[:16]


def kid_of(certs: Certs) -> str:
    key = serialization.load_pem_private_key(certs.jwt_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return _kid(key)


def make_all(certs: Certs, identities: dict[str, Iterable[str]], *, new_ca: bool = False) -> None:
    """Issue everything: the CA if missing (or new_ca), then the edge, every
    identity (name -> the DNS names it is reached by) and the token key."""
    certs.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(certs.directory, 0o700)
    if new_ca or not (certs.ca.exists() and certs.ca_key.exists()):
        make_ca(certs)
    # The public listener's certificate: reached where Envoy is.
    issue(certs, EDGE, dns=identities.get(ENVOY, (ENVOY,)))
    for name, dns in identities.items():
        issue(certs, name, dns=dns, uri=certs.spiffe_id(name))
    make_token_key(certs)
    for name in SHARED_KEYS:
        # 32 random bytes, as text (the catalog trims surrounding whitespace).
        _write(certs.shared_key(name), base64.urlsafe_b64encode(os.urandom(32)) + b"\n", private=True)


def ensure(certs: Certs, identities: dict[str, Iterable[str]]) -> bool:
    """make_all() unless every file is already there; True if it issued."""
    if certs.exists(identities):
        return False
    make_all(certs, identities)
    return True
