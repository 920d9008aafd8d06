"""The test's own hosts: network namespaces joined by a bridge, private addresses only.

A ``Network`` is a Linux bridge on this machine (the switch) with an address of its own
in 10.231.N.0/24, where the broker and a forwarder to PostgreSQL listen. Each ``Host`` is
a network namespace (``ip netns add``) joined to the bridge by a veth pair, with an
address and a hostname of its own; its processes share this machine's filesystem (a
SQLite file, the tests' marker files). ``Host.cut()`` sets the bridge's end of the host's
link down, as a pulled cable would: packets are dropped, open connections stay open on
both sides (nothing tells either end), and they carry on once ``restore()`` sets it up.

Making namespaces needs root and ``ip`` (iproute2, which ``.ci/run`` installs);
``Network.create()`` raises ``Unavailable`` where they cannot be made.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

from tests.conftest import _free_port, wait_for

PREFIX = "10.231"
_networks = itertools.count()


class Unavailable(Exception):
    """Network namespaces cannot be made here (not root, no ``ip``, refused)."""


def ip(*arguments: str) -> str:
    """Run ``ip`` with ``arguments``; return its output.

    Raises:
        subprocess.CalledProcessError: ``ip`` failed (its message in ``stderr``).
    """
    done = subprocess.run(["ip", *arguments], capture_output=True, text=True, check=True)
    return done.stdout


class Host:
    """A network namespace on the test's network: a host of its own for the network."""

    def __init__(self, name: str, netns: str, address: str, link: str) -> None:
        self.name = name
        """Its hostname too (``StepRun.worker`` shows it), e.g. ``host-a``."""
        self.netns = netns
        """The namespace's name, unique to this test run."""
        self.address = address
        """Its private address on the network."""
        self.link = link
        """The bridge's end of its veth pair: set down to cut the host off."""

    @property
    def prefix(self) -> list[str]:
        """The command that runs a command on this host: in its namespace, with its
        hostname (a UTS namespace of its own)."""
        named = 'hostname "$0" && exec "$@"'
        return [
            *("ip", "netns", "exec", self.netns),
            *("unshare", "--uts", "--", "sh", "-c", named, self.name),
        ]

    def cut(self) -> None:
        """Pull the cable: every packet to and from the host is dropped from now on."""
        ip("link", "set", self.link, "down")

    def restore(self) -> None:
        ip("link", "set", self.link, "up")

    def reaches(self, address: str, port: int) -> bool:
        """Whether a TCP connection from this host to ``address:port`` opens within 1 s."""
        probe = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)"
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", probe, address, str(port)],
            capture_output=True,
            timeout=30,
        )
        return done.returncode == 0


class Network:
    """A bridge with an address on this machine, and hosts on it (see the module)."""

    def __init__(self, tag: str, subnet: int) -> None:
        self.tag = tag
        self.bridge = f"aqb{tag}"
        self.address = f"{PREFIX}.{subnet}.1"
        """This machine's address on the network: where the hosts reach its services."""
        self.subnet = subnet
        self.hosts: list[Host] = []
        self.forwarders: list[subprocess.Popen] = []

    @classmethod
    def create(cls) -> Network:
        """Make a bridge with a /24 of its own, unused on this machine.

        Raises:
            Unavailable: namespaces cannot be made here.
        """
        if shutil.which("ip") is None:
            raise Unavailable("`ip` (iproute2) is not installed: no network namespaces")
        if shutil.which("unshare") is None:
            raise Unavailable("`unshare` (util-linux) is not installed: no hostnames of their own")
        if os.geteuid() != 0:
            raise Unavailable("network namespaces need root (`ip netns add`)")
        _remove_leftovers()
        # Unique per run (the pid) and per network of the run: parallel runs never meet.
        tag = f"{os.getpid()}x{next(_networks)}"
        used = {int(n) for n in re.findall(rf"inet {PREFIX}\.(\d+)\.", ip("-4", "-o", "addr"))}
        start = os.getpid() % 200 + 20
        candidates = itertools.chain(range(start, 250), range(20, start))
        subnet = next(n for n in candidates if n not in used)
        network = cls(tag, subnet)
        try:
            ip("link", "add", network.bridge, "type", "bridge")
        except subprocess.CalledProcessError as exc:
            raise Unavailable(f"cannot make a bridge: {exc.stderr.strip()}") from None
        try:
            ip("addr", "add", f"{network.address}/24", "dev", network.bridge)
            ip("link", "set", network.bridge, "up")
        except BaseException:
            network.close()
            raise
        return network

    def host(self, letter: str) -> Host:
        """Add a host: a namespace, a veth pair into it, its address, its link up.

        Raises:
            Unavailable: the namespace could not be made.
        """
        number = len(self.hosts) + 10
        found = Host(
            name=f"host-{letter}",
            netns=f"auditq-{self.tag}-{letter}",
            address=f"{PREFIX}.{self.subnet}.{number}",
            link=f"aqv{self.tag}{letter}",
        )
        try:
            ip("netns", "add", found.netns)
        except subprocess.CalledProcessError as exc:
            raise Unavailable(f"cannot make a network namespace: {exc.stderr.strip()}") from None
        self.hosts.append(found)
        # The host's end is eth0 inside its namespace (names there are its own).
        ip("link", "add", found.link, "type", "veth", "peer", "name", "eth0", "netns", found.netns)
        ip("link", "set", found.link, "master", self.bridge)
        ip("link", "set", found.link, "up")
        ip("-n", found.netns, "addr", "add", f"{found.address}/24", "dev", "eth0")
        ip("-n", found.netns, "link", "set", "eth0", "up")
        ip("-n", found.netns, "link", "set", "lo", "up")
        return found

    def forward(self, host: str, port: int) -> int:
        """Listen on the network's address and forward each connection to ``host:port``
        on this machine (``socat``); return the port it listens on. PostgreSQL listens
        on 127.0.0.1 only: its configuration is the machine's, left alone."""
        listen = _free_port()
        process = subprocess.Popen(
            [
                "socat",
                f"TCP-LISTEN:{listen},bind={self.address},reuseaddr,fork",
                f"TCP:{host}:{port}",
            ],
            start_new_session=True,  # close() ends the forked copies holding connections too
        )
        self.forwarders.append(process)

        def answers() -> bool:
            try:
                socket.create_connection((self.address, listen), 1).close()
            except OSError:
                return False
            return True

        wait_for(answers, 10, f"the forwarder to {host}:{port}")
        return listen

    def close(self) -> None:
        """Remove everything made: the processes left on the hosts (the tests' own), the
        forwarders, the namespaces (their veth pairs go with them), the bridge."""
        for process in self.forwarders:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)
        for found in self.hosts:
            _remove_namespace(found.netns)
            subprocess.run(["ip", "link", "del", found.link], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def _remove_namespace(netns: str) -> None:
    """End the processes left in ``netns`` (a test's workers), then remove it: a namespace
    lives on, with its veth pair, while a process is in it."""
    listed = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    for pid in listed.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def _remove_leftovers() -> None:
    """Remove the namespaces and links of earlier runs killed before their clean-up (a
    run's pid is in its names; a run still alive keeps its own)."""

    def gone(pid: str) -> bool:
        return not os.path.exists(f"/proc/{pid}")

    for name, pid in re.findall(r"^(auditq-(\d+)x\d+-\w+)", ip("netns", "list"), re.MULTILINE):
        if gone(pid):
            _remove_namespace(name)
    for name, pid in re.findall(r"^\d+: (aq[bv](\d+)x\w+)[@:]", ip("-o", "link"), re.MULTILINE):
        if gone(pid):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
