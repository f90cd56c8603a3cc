"""moto's AWS server on loopback, for tests that drive real boto3 over real HTTP.

:class:`MotoServer` starts :class:`moto.server.ThreadedMotoServer` on 127.0.0.1 at a free
port, gives its :attr:`~MotoServer.url` (for ``AWS_ENDPOINT_URL_*``) and admin clients
with dummy credentials, and wipes its state with :meth:`~MotoServer.reset`::

    @pytest.fixture(scope="module")
    def moto():
        with MotoServer() as server:
            yield server
"""

from __future__ import annotations

import http.client
import logging
from typing import Any, Self

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


class MotoServer:
    """A running moto server on 127.0.0.1; stop it with :meth:`stop` or ``with``."""

    def __init__(self) -> None:
        # verbose=False still logs each request through werkzeug.
        logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self._session = boto3.session.Session()
        self._clients: dict[tuple[str, str], Any] = {}

    def client(self, service: str, region: str = REGION) -> Any:
        """Return a boto3 client for ``service`` at this server, with dummy
        credentials whatever the environment says; one per service and region, closed
        by :meth:`stop`."""
        if (service, region) not in self._clients:
            self._clients[service, region] = self._session.client(
                service,
                region_name=region,
                endpoint_url=self.url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        return self._clients[service, region]

    def new_kms_key(self, region: str = REGION) -> str:
        """Make a symmetric KMS key in ``region``; return its ARN."""
        return str(self.client("kms", region).create_key()["KeyMetadata"]["Arn"])

    def reset(self) -> None:
        """Forget every bucket, key and object moto holds."""
        conn = http.client.HTTPConnection(self.url.removeprefix("http://"), timeout=10)
        try:
            conn.request("POST", "/moto-api/reset")
            conn.getresponse().read()
        finally:
            conn.close()

    def stop(self) -> None:
        """Close the admin clients and stop the server."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self._server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
