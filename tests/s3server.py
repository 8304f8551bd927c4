"""A real S3 protocol endpoint on 127.0.0.1: moto in server mode, spoken to over HTTP by boto3.

No S3-compatible server installs on these machines (see /work/shared/notes/real-servers.md); moto's
server mode is the closest thing, and production code reaches it exactly as it would reach S3.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

HOST = "127.0.0.1"
# moto accepts any credentials; they still travel through the code path real ones take.
ACCESS_KEY_ID = "moto-access-key"
SECRET_ACCESS_KEY = "moto-secret-key"
REGION = "us-east-1"


@contextmanager
def running_moto_server() -> Iterator[str]:
    """Start moto on a port the OS picks (no race with other xdist workers); yield its URL."""
    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
