"""A real Redis Cluster for the tests: six redis-server processes on free loopback ports.

Three masters and three replicas, created with ``redis-cli --cluster create``
and stopped afterwards.  ``python -m tests.cluster`` starts one for
development and prints its URL (stopped with Ctrl-C).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: How long a silent node counts as alive; low, so that a failover takes about a second.
NODE_TIMEOUT_MS = 1000
#: Masters, each with one replica.
MASTERS = 3
START_TIMEOUT_S = 30.0


class ClusterUnavailable(RuntimeError):
    """redis-server or redis-cli is missing, or the cluster did not form."""


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_ports(count: int) -> list[int]:
    """*count* free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < 55000 and port not in ports and _port_free(port + 10000):
            ports.append(port)
    return ports


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    #: Connection options of every client (TLS, a password).
    options: dict[str, Any] = field(default_factory=dict)

    def client(self, **kwargs: Any) -> Any:
        import redis

        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=5, **{**self.options, **kwargs}
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Cluster:
    """A running cluster; :meth:`client` is a redis-py RedisCluster client on it."""

    folder: Path
    nodes: list[Node]
    binary: str
    #: What every node was started with besides the defaults.
    extra: tuple[str, ...] = ()
    _clients: list[Any] = field(default_factory=list)

    @property
    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:3])

    @property
    def url(self) -> str:
        """The resultkit store URL (``rediscluster://``)."""
        return f"rediscluster://{self.hosts}"

    @property
    def backend_url(self) -> str:
        """The Celery ``result_backend`` URL."""
        return f"resultkit-redis+{self.url}"

    def client(self, **kwargs: Any) -> Any:
        from redis.cluster import ClusterNode, RedisCluster

        client = RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", node.port) for node in self.nodes],
            socket_timeout=5,
            **{**self.nodes[0].options, **kwargs},
        )
        self._clients.append(client)
        return client

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def master_of(self, key: str | bytes) -> Node:
        """The node that serves *key*'s slot now."""
        client = self.client()
        node = client.get_node_from_key(key)
        client.close()
        return self.node(int(node.port))

    def replica_of(self, master: Node) -> Node:
        """The live replica that copies *master*."""
        for node in self.nodes:
            if node.alive and node is not master:
                info = node.client(decode_responses=True).info("replication")
                if info["role"] == "slave" and int(info["master_port"]) == master.port:
                    return node
        raise AssertionError(f"master {master.port} has no live replica")

    def kill_with_lagging_replica(self, master: Node, lag_s: float) -> None:
        """Cut *master*'s replica off (SIGSTOP, and the master drops the link), let the
        master take writes for *lag_s* that the replica never gets, SIGKILL the master,
        then thaw the replica, which takes over without those writes: what a replica
        lagging *lag_s* behind loses."""
        replica = self.replica_of(master)
        replica.process.send_signal(signal.SIGSTOP)
        try:
            master.client().client_kill_filter(_type="slave")
            time.sleep(lag_s)
            self.kill(master)
        finally:
            replica.process.send_signal(signal.SIGCONT)

    def migrate_slot(self, slot: int, source: int, target: int, during: Any = None) -> None:
        """Move *slot* from master port *source* to master port *target* as
        ``redis-cli --cluster reshard`` does, calling *during* while it is half moved."""
        src, dst = self.node(source).client(), self.node(target).client()
        src_id, dst_id = (str_of(c.cluster("myid")) for c in (src, dst))
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100000)
        half = keys[: len(keys) // 2]
        if half:
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *half)
        if during is not None:
            during()
        rest = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100000)
        if rest:
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *rest)
        for node in self.masters():
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)

    def reshard(self, source: int, target: int, slots: int) -> subprocess.Popen[str]:
        """Start ``redis-cli --cluster reshard`` moving *slots* slots from master port
        *source* to master port *target*, one key per ``MIGRATE`` (slow enough to be
        caught half done); the caller waits for it."""
        cli = shutil.which("redis-cli")
        assert cli is not None
        src_id, dst_id = (str_of(self.node(p).client().cluster("myid")) for p in (source, target))
        return subprocess.Popen(
            [
                cli,
                "--cluster",
                "reshard",
                f"127.0.0.1:{source}",
                "--cluster-from",
                src_id,
                "--cluster-to",
                dst_id,
                "--cluster-slots",
                str(slots),
                "--cluster-pipeline",
                "1",
                "--cluster-yes",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def slots_of(self, port: int) -> int:
        """How many slots master *port* serves."""
        client = self.node(port).client()
        return sum(
            int(r[1]) - int(r[0]) + 1
            for r in client.execute_command("CLUSTER", "SLOTS")
            if int(r[2][1]) == port
        )

    def busiest_slot_of(self, port: int) -> int:
        """The slot of master *port* that holds the most keys."""
        client = self.node(port).client()
        ranges = [
            (int(r[0]), int(r[1]))
            for r in client.execute_command("CLUSTER", "SLOTS")
            if int(r[2][1]) == port
        ]
        return max(
            (slot for low, high in ranges for slot in range(low, high + 1)),
            key=lambda slot: int(client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)),
        )

    def masters(self) -> list[Node]:
        return [n for n in self.nodes if n.alive and _role(n) == "master"]

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until every live node says the cluster is ok and each master has a linked replica
        (or none are left to link)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(
                    n.client().cluster("info")["cluster_state"] == "ok"
                    for n in self.nodes
                    if n.alive
                ) and all(_replica_linked(n) for n in self.nodes if n.alive):
                    return
            except Exception:  # a node still starting or just killed
                pass
            if time.monotonic() > deadline:
                raise ClusterUnavailable("the cluster did not become healthy")
            time.sleep(0.05)

    def kill(self, node: Node) -> None:
        """SIGKILL *node* (a master's replica then takes over)."""
        node.process.kill()
        node.process.wait(10)

    def restart(self, node: Node) -> None:
        """Start a killed node again, on its port, with its nodes.conf (it rejoins)."""
        tls = "--tls-cert-file" in self.extra
        extra = (("--tls-port", str(node.port)) if tls else ()) + self.extra
        node.process = _start_node(self.binary, self.folder, node.port, extra)
        _wait_answers(node.port, tls)

    def flush(self) -> None:
        for node in self.masters():
            with contextlib.suppress(Exception):
                node.client().flushall()

    def stop(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        for node in self.nodes:
            if node.alive:
                node.process.send_signal(signal.SIGCONT)
                node.process.terminate()
        for node in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(10)


def str_of(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _role(node: Node) -> str:
    return str(node.client(decode_responses=True).info("replication")["role"])


def _replica_linked(node: Node) -> bool:
    info = node.client(decode_responses=True).info("replication")
    if info["role"] == "master":
        return True
    return bool(info.get("master_link_status") == "up")


def _start_node(
    binary: str, folder: Path, port: int, extra: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    # With TLS (extra has --tls-port PORT), the plain port is closed.
    listen = ("--port", "0") if "--tls-port" in extra else ("--port", str(port))
    return subprocess.Popen(
        [
            binary,
            *listen,
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{port}.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            # A replica may always take over, however long its link was down.
            "--cluster-replica-validity-factor",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
            "--dir",
            str(folder),
            "--dbfilename",
            f"dump-{port}.rdb",
            "--logfile",
            f"redis-{port}.log",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_answers(port: int, tls: bool = False) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as probe:
                if tls:  # a TLS node answers the handshake; that it listens is enough
                    return
                probe.sendall(b"PING\r\n")
                # +PONG, or -NOAUTH from a node with a password (-LOADING: not yet)
                if probe.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise ClusterUnavailable(f"redis-server on port {port} did not start")


def start_cluster(
    folder: Path,
    *,
    replicas: int = 1,
    extra: tuple[str, ...] = (),
    cli_options: tuple[str, ...] = (),
    client_options: dict[str, Any] | None = None,
    ports: list[int] | None = None,
) -> Cluster:
    """Start three masters (with *replicas* each) in *folder* and join them into a cluster.

    *extra* goes to every redis-server (``--tls-port`` is added when it names TLS
    files), *cli_options* to redis-cli, *client_options* to every test client.
    """
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise ClusterUnavailable("redis-server and redis-cli are needed for a Redis Cluster")
    ports = ports or free_cluster_ports(MASTERS * (1 + replicas))
    tls = "--tls-cert-file" in extra
    nodes = [
        Node(
            port,
            _start_node(binary, folder, port, (("--tls-port", str(port)) if tls else ()) + extra),
            dict(client_options or {}),
        )
        for port in ports
    ]
    cluster = Cluster(folder, nodes, binary, extra)
    try:
        for port in ports:
            _wait_answers(port, tls)
        created = subprocess.run(
            [
                cli,
                *cli_options,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise ClusterUnavailable(f"redis-cli --cluster create failed: {created.stdout}")
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running_cluster(ports: list[int] | None = None) -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="rk-cluster-") as folder:
        cluster = start_cluster(Path(folder), ports=ports)
        try:
            yield cluster
        finally:
            cluster.stop()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster",
        description="Start a six-node Redis Cluster (3 masters, 3 replicas) on loopback "
        "until Ctrl-C (or SIGTERM); print its URLs.",
    )
    parser.add_argument(
        "--port", type=int, help="first of six consecutive ports (default: free ports)"
    )
    args = parser.parse_args(argv)
    ports = list(range(args.port, args.port + 6)) if args.port else None
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    with running_cluster(ports) as running:
        print(f"store URL:   {running.url}", flush=True)
        print(f"backend URL: {running.backend_url}", flush=True)
        print("Ctrl-C stops it (its data goes with it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
