"""`tvote node`'s addresses and TLS files (issue 18, "Bad input"): each bad one is a one-line error and exit 1
before anything starts. "Before anything": the DSN names a Postgres that does not exist, so an error about
Postgres would mean the address or file was not checked first; no process is left and no port is held."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.tls import self_signed

SRC = Path(__file__).resolve().parents[2] / "src"
NO_PG = "host=127.0.0.1 port=1 dbname=x user=y connect_timeout=1"


@pytest.fixture
def node_argv(tmp_path: Path) -> list[str]:
    token = tmp_path / "token"
    token.write_text("t" * 32)
    token.chmod(0o600)
    return [sys.executable, "-c", "from tvote.cli import app; app()", "node", "--node-id", "trustee-1",
            "--key-file", str(tmp_path / "key"), "--dsn", NO_PG, "--etcd", "http://127.0.0.1:1",
            "--api-token-file", str(token)]


def run(argv: list[str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*argv, *extra], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "300", "TVOTE_METRICS_PORT": ""})


def refused(r: subprocess.CompletedProcess, match: str) -> str:
    lines = [x for x in r.stdout.splitlines() if x.strip()]
    assert r.returncode == 1, r.stdout + r.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stdout  # one line
    assert match in lines[0], lines[0]
    assert "Postgres" not in lines[0]  # refused before the first connection
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


@pytest.mark.parametrize("bad", ["not-a-multiaddr", "/ip4/10.0.0.300/tcp/4001", "/ip4/10.0.0.3/udp/4001",
                                 "/ip4/0.0.0.0/tcp/4001", "/ip4/10.0.0.3/tcp/0",
                                 "/ip4/10.0.0.3/tcp/4001/p2p/12D3KooWKUPpmUph7PPE4QPjSnvMuSpqHPm3baAyMbYxRur94e8K"])
def test_an_advertise_address_that_does_not_parse_or_cannot_be_dialled_is_refused(node_argv, bad):
    refused(run(node_argv, "--advertise", bad), "--advertise")


def test_a_listen_address_that_does_not_parse_is_refused(node_argv):
    refused(run(node_argv, "--listen", "/ip4/127.0.0.1/udp/1"), "--listen")
    refused(run(node_argv, "--api-listen", "localhost"), "--api-listen")
    refused(run(node_argv, "--metrics-listen", "127.0.0.1:99999"), "--metrics-listen")


def test_a_wildcard_listen_without_advertise_is_refused(node_argv):
    line = refused(run(node_argv, "--listen", "/ip4/0.0.0.0/tcp/4001"), "--advertise")
    assert "every interface" in line


def test_a_listen_address_in_use_is_refused_for_each_endpoint(node_argv, busy_port):
    refused(run(node_argv, "--listen", f"/ip4/127.0.0.1/tcp/{busy_port}"), "Address already in use")
    refused(run(node_argv, "--api-listen", f"127.0.0.1:{busy_port}"), "Address already in use")
    refused(run(node_argv, "--metrics-listen", f"127.0.0.1:{busy_port}"), "Address already in use")
    r = subprocess.run([sys.executable, "-m", "submitter", "--dsn", NO_PG, "--etcd", "127.0.0.1:1", "--rpc",
                        "http://127.0.0.1:1", "--contract", "0x" + "0" * 40, "--key-file", "/dev/null",
                        "--chain-id", "1", "--metrics-listen", f"127.0.0.1:{busy_port}"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Address already in use" in r.stderr, r.stderr


def test_an_address_this_host_does_not_have_is_refused(node_argv):
    refused(run(node_argv, "--listen", "/ip4/192.0.2.10/tcp/4001"), "Cannot assign requested address")


def test_the_old_flags_still_work_but_not_mixed_with_the_new(node_argv, busy_port):
    refused(run(node_argv, "--listen-port", str(busy_port)), "Address already in use")  # old form, same probe
    refused(run(node_argv, "--listen-port", "0", "--listen", "/ip4/127.0.0.1/tcp/0"), "not both")
    refused(run(node_argv, "--api-port", "0", "--api-listen", "127.0.0.1:1"), "not both")


def test_a_tls_file_missing_unreadable_or_not_matching_its_key_is_refused(node_argv, tmp_path):
    cert, key = self_signed(tmp_path, "a", "127.0.0.1")
    other_cert, other_key = self_signed(tmp_path, "b", "127.0.0.1")
    tls = ("--api-tls-cert", str(cert), "--api-tls-key")
    refused(run(node_argv, *tls, str(tmp_path / "missing.key")), "No such file or directory")
    refused(run(node_argv, *tls, str(tmp_path)), "cannot be read")  # a directory: unreadable even for root
    refused(run(node_argv, *tls, str(other_key)), "the key does not match the certificate")
    (tmp_path / "junk.pem").write_text("not a certificate")
    refused(run(node_argv, "--api-tls-cert", str(tmp_path / "junk.pem"), "--api-tls-key", str(key)), "not a PEM")
    refused(run(node_argv, "--api-tls-cert", str(other_cert)), "needs both")
    refused(run(node_argv, "--api-listen", "0.0.0.0:0"), "needs TLS")


def test_a_retention_window_under_its_minimum_is_refused_by_the_option_parser(node_argv):
    r = run(node_argv, "--retain-final", "5")
    assert r.returncode == 2, r.stdout + r.stderr  # the option parser's usage error: nothing started
    assert "retain-final" in r.stdout + r.stderr
