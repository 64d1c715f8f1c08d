"""An https registry: push and pull through TLS, certificates checked.

The registry is the real app under uvicorn with a certificate for 127.0.0.1 made here
(``cryptography``), trusted through ``SSL_CERT_FILE`` as a private CA would be. Every
client path goes through it: control calls (httpx), uploads (aiohttp) and the fetch
threads' downloads (``http.client``, ``wreg._http.ChunkReader``). Without the CA the
pull is refused with a clear error, and nothing is written.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.server.server_support import make_settings, running
from wreg import Client, _http
from wreg.core.errors import WregError
from wreg_server.app import create_app

LIMITS = {"max_chunk_raw": 8 << 20, "max_chunk_encoded": 9 << 20}


def _certificate(where: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = where / "cert.pem", where / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def https_registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = _certificate(tmp_path)
    app = create_app(make_settings(tmp_path / "data", **LIMITS))
    try:
        with running(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
            yield url, cert
    finally:
        _http._tls_context.cache_clear()


def test_push_and_pull_over_https(
    https_registry: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = https_registry
    model = tmp_path / "model"
    model.mkdir()
    files = {"big.bin": os.urandom(3 << 20), "small.json": b'{"a": 1}'}
    for name, data in files.items():
        (model / name).write_bytes(data)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    _http._tls_context.cache_clear()
    Client(url, cache_dir=tmp_path / "push-cache").push(model, "tls/model@v1")
    result = Client(url, cache_dir=tmp_path / "pull-cache").pull("tls/model@v1", tmp_path / "out")
    assert result.chunks_downloaded >= 1
    for name, data in files.items():
        assert (tmp_path / "out" / name).read_bytes() == data


def test_an_untrusted_certificate_is_refused(
    https_registry: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = https_registry
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(os.urandom(1 << 20))
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    _http._tls_context.cache_clear()
    pushed = Client(url, cache_dir=tmp_path / "push-cache").push(model, "tls/untrusted@v1")
    assert pushed.chunks_new >= 1
    monkeypatch.delenv("SSL_CERT_FILE")  # certifi's bundle: the self-signed CA is not in it
    _http._tls_context.cache_clear()
    client = Client(url, cache_dir=tmp_path / "pull-cache")
    with pytest.raises(WregError) as caught:
        client.pull("tls/untrusted@v1", tmp_path / "out")
    assert "certificate" in str(caught.value).lower() or "ssl" in str(caught.value).lower()
    assert not (tmp_path / "out").exists()
