"""The tests' own servers are stopped with every child they started, whatever the test's outcome."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.servers import PORTS_FROM, free_port, free_ports, group_alive, port_open, running


def test_a_server_that_ignores_sigterm_and_its_children_are_gone_when_the_test_fails(tmp_path: Path) -> None:
    port = free_port()
    # bash ignores SIGTERM and so do its children (the ignore is inherited): a server busy in shutdown
    # and a child forgotten by it, the two ways action servers outlived their tests
    script = f'trap "" TERM; sleep 300 & {sys.executable} -m http.server {port} --bind 127.0.0.1; wait'
    with pytest.raises(RuntimeError, match="the test failed"):
        with running(["bash", "-c", script], tmp_path / "server.log", ready=lambda: port_open(port),
                     grace=0.5) as server:
            group = server.pid
            assert group_alive(group)
            raise RuntimeError("the test failed")
    assert not group_alive(group)  # no orphan left behind, not even a zombie
    assert not port_open(port)


def test_ports_for_servers_are_outside_the_range_outgoing_connections_take_theirs_from() -> None:
    # an action server once failed to bind its port: an outgoing connection had taken it meanwhile
    first_ephemeral, _ = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = free_ports(200)
    assert len(set(ports)) == 200
    assert all(PORTS_FROM <= port < first_ephemeral for port in ports)
