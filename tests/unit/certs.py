"""Self-signed key pairs made at test time (the `cryptography` package), and the Secret that carries one."""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class KeyPair:
    cert_pem: str
    key_pem: str
    cert_der: bytes


def self_signed(*names: str) -> KeyPair:
    """An ECDSA P-256 certificate for `names` (the first is the subject's CN), valid from a minute ago for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem,
                   cert.public_bytes(serialization.Encoding.DER))


def tls_secret(name: str, pair: KeyPair, namespace: str = "istio-system") -> str:
    """A kubernetes.io/tls Secret as `kubectl create secret tls` writes it (base64 `data`)."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return (f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
            f"type: kubernetes.io/tls\ndata:\n  tls.crt: {b64(pair.cert_pem)}\n  tls.key: {b64(pair.key_pem)}\n")
