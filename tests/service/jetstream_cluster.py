"""A NATS JetStream cluster on loopback for tests and benchmarks: N `nats-server` processes, each
with its own store folder, routed to each other; started, waited for, killed and restarted."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CONFIG = """
server_name: {name}
listen: 127.0.0.1:{port}
http: 127.0.0.1:{monitor}
max_payload: 8MB
jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 1GB }}
cluster {{
  name: recindex
  listen: 127.0.0.1:{route}
  routes: [{routes}]
}}
"""


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@dataclass
class Node:
    name: str
    port: int
    monitor: int
    config: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["nats-server", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def kill_9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@dataclass
class JetStreamCluster:
    folder: Path
    size: int = 3
    nodes: list[Node] = field(default_factory=list)

    def start(self) -> JetStreamCluster:
        ports = free_ports(3 * self.size)
        n = self.size
        clients, monitors, routes = ports[:n], ports[n : 2 * n], ports[2 * n :]
        for i in range(self.size):
            name = f"n{i}"
            others = ", ".join(f"nats-route://127.0.0.1:{routes[j]}" for j in range(self.size) if j != i)
            config = self.folder / f"{name}.conf"
            config.write_text(
                CONFIG.format(
                    name=name,
                    port=clients[i],
                    monitor=monitors[i],
                    store=self.folder / name,
                    route=routes[i],
                    routes=others,
                )
            )
            self.nodes.append(Node(name, clients[i], monitors[i], config))
        for node in self.nodes:
            node.start()
        self.wait_ready()
        return self

    def wait_ready(self, seconds: float = 30) -> None:
        """Until every running node says JetStream is up (`/healthz?js-enabled-only=true`)."""
        deadline = time.monotonic() + seconds
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{node.monitor}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nats-server {node.name} is not healthy after {seconds} s")
                time.sleep(0.1)

    def url(self, stream: str, replicas: int | None = None) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"nats://{hosts}/{stream}?replicas={replicas or self.size}"

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def stream_leader(self, stream: str) -> str:
        """The name of the node leading `stream` (from any live node's monitoring endpoint)."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            info = httpx.get(
                f"http://127.0.0.1:{node.monitor}/jsz", params={"streams": "true"}, timeout=2
            ).json()
            for account in info.get("account_details", []):
                for detail in account.get("stream_detail", []):
                    if detail["name"] == stream and detail.get("cluster", {}).get("leader"):
                        return detail["cluster"]["leader"]
        raise LookupError(f"no leader known for stream {stream}")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill_9()
        shutil.rmtree(self.folder, ignore_errors=True)
