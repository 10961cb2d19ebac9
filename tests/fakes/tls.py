"""A private certificate authority made in the test (`cryptography`), and aiohttp apps served over
TLS with it: an origin the system trust store does not know, and one that demands a client
certificate from the same CA and logs the subject it was shown.
"""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
import ssl

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


class TestCA:
    """A CA in `directory`; `issue()` writes a certificate and key signed by it, as PEM files."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: pathlib.Path, common: str = "Egress Test CA") -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(_name(common))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(hours=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
                     .sign(self.key, hashes.SHA256()))
        self.file = str(directory / f"{common.replace(' ', '-')}.pem")
        pathlib.Path(self.file).write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common: str, names: tuple[str, ...] = (), client: bool = False) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        alternative = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n) for n in names]
        builder = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                         else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        if alternative:
            builder = builder.add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        stem = self.directory / common.replace(" ", "-")
        cert_file, key_file = f"{stem}.crt", f"{stem}.key"
        pathlib.Path(cert_file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pathlib.Path(key_file).write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
        return cert_file, key_file

    def server_context(self, names: tuple[str, ...], client_ca: str | None = None) -> ssl.SSLContext:
        """A server context for `names`; with `client_ca`, a client certificate from it is required."""
        cert_file, key_file = self.issue(names[0], names)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=client_ca)
        return context


class TLSServer:
    """An aiohttp app served over TLS on 127.0.0.1; `subjects` logs each client certificate's CN."""

    def __init__(self, app: web.Application, context: ssl.SSLContext) -> None:
        self.app = app
        self.context = context
        self.subjects: list[str | None] = []
        self.port = 0
        app.middlewares.append(self._log_subject)

    @web.middleware
    async def _log_subject(self, request: web.Request, handler):
        peer = request.transport.get_extra_info("peercert") if request.transport is not None else None
        subject = dict(pair[0] for pair in peer["subject"]).get("commonName") if peer else None
        self.subjects.append(subject)
        return await handler(request)

    async def start(self) -> TLSServer:
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()
