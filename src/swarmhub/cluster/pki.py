"""A cluster's certificates: peers prove membership with TLS (libtorrent SSL torrents, mutual authentication).

``init_ca(dir)`` makes the cluster's CA (``ca.pem``, ``ca.key``: keep this one on one machine) and writes its
Diffie-Hellman parameters (``dh.pem``, 2048-bit: RFC 7919's ffdhe2048 group, the published safe prime TLS
itself names, instead of a fresh prime that takes half a minute to find). ``issue(ca_dir, name, out)`` makes
a node's identity folder: ``node.pem`` signed by the CA, ``node.key``, and copies of ``ca.pem`` and
``dh.pem``. A node's certificate carries the subject alternative name ``*``: the libtorrent manual's rule is
that a peer's certificate must name the torrent's info-hash (hex) or ``*`` in its SANs, and a cluster's nodes
trade every cluster torrent.

A cluster torrent (``bt.metainfo.cluster_variant``) holds ``ca.pem`` as its ``ssl-cert``: libtorrent then talks
to its peers over TLS only, and only to peers whose certificate that CA signed.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from swarmhub.errors import ConfigError

__all__ = ["ClusterIdentity", "init_ca", "issue"]

_DAYS_CA, _DAYS_NODE = 3650, 825

# RFC 7919, appendix A.1 (as ``openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048`` writes it)
FFDHE2048 = b"""-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""


@dataclass(frozen=True)
class ClusterIdentity:
    """A node's identity folder (what ``issue`` wrote)."""

    cert: Path
    key: Path
    dh: Path
    ca: Path

    @classmethod
    def load(cls, folder: Path) -> ClusterIdentity:
        identity = cls(folder / "node.pem", folder / "node.key", folder / "dh.pem", folder / "ca.pem")
        missing = [p.name for p in (identity.cert, identity.key, identity.dh, identity.ca) if not p.is_file()]
        if missing:
            raise ConfigError(
                f"{folder} is not a node identity (missing {', '.join(missing)})",
                hint="make one on the CA's machine: swarmhub cluster join NAME --ca CA_DIR --out DIR",
            )
        return identity

    def ca_pem(self) -> bytes:
        return self.ca.read_bytes()


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def init_ca(folder: Path, name: str = "swarmhub cluster CA") -> Path:
    """The cluster's CA and DH parameters in ``folder``; refuses to overwrite an existing CA."""
    if (folder / "ca.key").exists():
        raise ConfigError(f"{folder} already holds a CA", hint="use it (swarmhub cluster join), or pick another --dir")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_DAYS_CA))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(key, hashes.SHA256())
    )
    _write(folder / "ca.key", _key_pem(key), private=True)
    _write(folder / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
    _write(folder / "dh.pem", FFDHE2048)
    return folder


def issue(ca_folder: Path, name: str, out: Path) -> ClusterIdentity:
    """A node identity signed by the CA in ``ca_folder``, written to ``out``."""
    try:
        ca_key = serialization.load_pem_private_key((ca_folder / "ca.key").read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate((ca_folder / "ca.pem").read_bytes())
        dh_pem = (ca_folder / "dh.pem").read_bytes()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{ca_folder} holds no usable CA: {exc}", hint="make one: swarmhub cluster init") from exc
    if not isinstance(ca_key, rsa.RSAPrivateKey):
        raise ConfigError(f"{ca_folder}/ca.key is not an RSA key")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_DAYS_NODE))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("*")]), critical=False)  # every torrent
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write(out / "node.key", _key_pem(key), private=True)
    _write(out / "node.pem", cert.public_bytes(serialization.Encoding.PEM))
    _write(out / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(out / "dh.pem", dh_pem)
    return ClusterIdentity.load(out)
