"""nginx in front of test servers, with a site configuration as deployed."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from stargate.testing.programs import Started, eventually, free_port, require

__all__ = ["Nginx", "self_signed_certificate"]


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Make a certificate for ``127.0.0.1`` and its key in ``directory``.

    Valid for a day; return their paths (``cert.pem``, ``key.pem``).  A
    browser must be told to accept it (Playwright's
    ``ignore_https_errors=True``).
    """
    openssl = require("openssl", "openssl")
    cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt"]
        + ["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def _substitute(pattern: str, replacement: str, text: str) -> str:
    text, found = re.subn(pattern, replacement, text)
    if found != 1:
        raise ValueError(f"the site should have one line matching {pattern!r}")
    return text


class Nginx(Started):
    """Debian's nginx on 127.0.0.1 in front of ``backends``, for one test.

    ``site`` is a site configuration such as a generated project's
    ``deploy/nginx.conf``, changed only where a test must: its ``listen 80``
    and ``listen 443 ssl`` lines take free ports of 127.0.0.1
    (:attr:`port`, :attr:`tls_port`), its one upstream ``server
    127.0.0.1:PORT;`` line becomes one line per backend port, and its
    ``ssl_certificate`` and ``ssl_certificate_key`` lines name a
    certificate made for 127.0.0.1 (:func:`self_signed_certificate`).  A
    site without one of those lines raises :class:`ValueError`.  nginx runs
    in the foreground, unprivileged, with every file under ``directory``.
    Use it as a context manager, or call :meth:`stop`.
    """

    def __init__(self, directory: Path, site: str, backends: Sequence[int]) -> None:
        nginx = require("nginx", "nginx", folders=["/usr/sbin"])
        directory = Path(directory)
        #: The plain HTTP port.
        self.port = free_port()
        #: The TLS port.
        self.tls_port = free_port()
        upstream = " ".join(f"server 127.0.0.1:{port};" for port in backends)
        site = _substitute(r"server 127\.0\.0\.1:\d+;", upstream, site)
        site = _substitute(r"listen 80;", f"listen 127.0.0.1:{self.port};", site)
        site = _substitute(
            r"listen 443 ssl;", f"listen 127.0.0.1:{self.tls_port} ssl;", site
        )
        cert, key = self_signed_certificate(directory)
        site = _substitute(r"ssl_certificate .*;", f"ssl_certificate {cert};", site)
        site = _substitute(
            r"ssl_certificate_key .*;", f"ssl_certificate_key {key};", site
        )
        (directory / "site.conf").write_text(site)
        temporary = "\n".join(
            f"    {kind}_temp_path {directory}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (directory / "nginx.conf").write_text(
            "daemon off;\nmaster_process off;\nworker_processes 1;\n"
            f"pid {directory}/nginx.pid;\n"
            f"error_log {directory}/error.log info;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n    access_log {directory}/access.log;\n{temporary}\n"
            f"    include {directory}/site.conf;\n}}\n"
        )
        #: Where its files and logs are.
        self.directory = directory
        # Before it reads the configuration, nginx writes its errors to
        # stderr; after, to error_log.
        with (directory / "nginx.out").open("wb") as output:
            self.process = subprocess.Popen(
                [nginx, "-c", str(directory / "nginx.conf"), "-p", str(directory)],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        started = eventually(self._listening, 10)
        if not started or self.process.poll() is not None:
            self.stop()
            logs = [directory / "nginx.out", directory / "error.log"]
            raise RuntimeError(
                "nginx did not start:\n"
                + "".join(log.read_text() for log in logs if log.exists())
            )

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return self.process.poll() is not None  # exited: no use waiting

    @property
    def url(self) -> str:
        """The plain ``http://`` base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        """The ``https://`` base URL, without a trailing slash."""
        return f"https://127.0.0.1:{self.tls_port}"

    def ws_url(self, path: str = "/") -> str:
        """Return the plain ``ws://`` URL of ``path``."""
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        """Stop it (nothing of it is kept)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def __enter__(self) -> Nginx:
        return self
