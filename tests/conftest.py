"""Shared fixtures: demo checkpoints per family (written once per session) and a network guard."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

FAMILIES = ("sd1", "sd2", "sdxl")


class NetworkAttempt(AssertionError):
    pass


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs with outbound connections (and DNS look-ups) to anything but loopback refused."""
    attempts = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            attempts.append(address)
            raise NetworkAttempt(f"network access attempted: {address}")
        return real_connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost") and not _is_loopback(host):
            attempts.append(host)
            raise NetworkAttempt(f"DNS look-up attempted: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts
    assert not attempts, f"the test tried to reach the network: {attempts}"


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory):
    """family → path of a demo checkpoint (fp16 safetensors + .yaml sidecar), seed 0."""
    from trainer.models.demo import make_demo_model

    folder = tmp_path_factory.mktemp("demo-models")
    return {f: make_demo_model(f, folder / f"demo-{f}.safetensors") for f in FAMILIES}
