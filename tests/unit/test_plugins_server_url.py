"""The URL a server-side plugin uses for its own server: from the server's config, never ``DEEPFORGE_HOST``."""

from __future__ import annotations

from deepforge_plugins.base import SERVER_URL_ENV, server_url


def test_the_servers_own_port_not_deepforge_host() -> None:
    config = {"server": {"port": 40123, "handle": {"port": 40123, "host": "127.0.0.1"}}}
    assert server_url(config, {"DEEPFORGE_HOST": "http://127.0.0.1:8888"}) == "http://127.0.0.1:40123"


def test_the_bind_address_and_wildcards() -> None:
    assert server_url({"server": {"handle": {"port": 9000, "host": "10.1.2.3"}}}, {}) == "http://10.1.2.3:9000"
    assert server_url({"server": {"handle": {"port": 9000, "host": "0.0.0.0"}}}, {}) == "http://127.0.0.1:9000"
    assert server_url({"server": {"handle": {"port": 9000, "host": "::1"}}}, {}) == "http://[::1]:9000"
    assert server_url({"server": {"port": 9001}}, {}) == "http://127.0.0.1:9001"


def test_the_operator_names_the_public_url() -> None:
    environ = {SERVER_URL_ENV: "https://deepforge.example.org/"}
    assert server_url({"server": {"port": 9000}}, environ) == "https://deepforge.example.org"
