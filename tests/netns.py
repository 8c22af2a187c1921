"""Hosts for tests: network namespaces joined by a bridge, each with its own address, made with `ip netns`
and veth pairs (root only). Processes started in a host reach the others only over this network."""
import os
import shutil
import subprocess
import uuid


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Network:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.tag, self.bridge = tag, f"dcbr{tag}"
        self.subnet = f"10.{100 + int(tag[:2], 16) % 100}.{int(tag[2:4], 16)}"
        self.gateway = f"{self.subnet}.1"  # the machine itself: Redis, PostgreSQL and S3 listen here
        self.hosts: dict[str, str] = {}
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def host(self, name: str) -> str:
        """A new namespace `name` with one interface on the bridge; returns its address."""
        ns, address = self.ns(name), f"{self.subnet}.{len(self.hosts) + 2}"
        outer, inner = f"dc{self.tag}{len(self.hosts)}a", f"dc{self.tag}{len(self.hosts)}b"
        ip("netns", "add", ns)
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", outer, "master", self.bridge)
        ip("link", "set", outer, "up")
        ip("link", "set", inner, "netns", ns)
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
        ip("-n", ns, "link", "set", inner, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        self.hosts[name] = address
        return address

    def ns(self, name: str) -> str:
        return f"dc{self.tag}-{name}"

    def command(self, name: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(name), *args]

    def remove(self) -> None:
        for name in self.hosts:
            subprocess.run(["ip", "netns", "del", self.ns(name)], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)


def can_make_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None
