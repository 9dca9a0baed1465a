"""DataExporter host lists (light: no numpy, no trio)."""

from __future__ import annotations

import ipaddress
import re

__all__ = ["parse_hosts", "unresolvable_hosts", "DEFAULT_PORT"]

DEFAULT_PORT = 46491


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"bad {what} {text!r}") from None


def _expand(entry: str, default_port: int) -> list[tuple[str, int]]:
    entry = entry.strip()
    if not entry:
        raise ValueError("empty host entry")
    host, sep, port_text = entry.rpartition(":")
    if not sep:
        host, port_text = entry, ""
    if not host:
        raise ValueError(f"{entry!r}: missing host")
    if port_text:
        if "-" in port_text:
            lo_text, _, hi_text = port_text.partition("-")
            lo, hi = _int(lo_text, "port"), _int(hi_text, "port")
            if not 0 < lo <= hi < 65536:
                raise ValueError(f"{entry!r}: bad port range")
            return [(host, p) for p in range(lo, hi + 1)]
        port = _int(port_text, "port")
        if not 0 < port < 65536:
            raise ValueError(f"{entry!r}: port out of range")
        return [(host, port)]
    last = host.rsplit(".", 1)
    if len(last) == 2 and re.fullmatch(r"\d+-\d+", last[1]):
        lo_text, _, hi_text = last[1].partition("-")
        lo, hi = _int(lo_text, "octet"), _int(hi_text, "octet")
        if not 0 <= lo <= hi <= 255:
            raise ValueError(f"{entry!r}: bad last-octet range")
        hosts = [f"{last[0]}.{i}" for i in range(lo, hi + 1)]
        for h in hosts:
            ipaddress.ip_address(h)
        return [(h, default_port) for h in hosts]
    return [(host, default_port)]


def parse_hosts(hosts: str | list[str], default_port: int = DEFAULT_PORT) -> list[tuple[str, int]]:
    """Expand a host specification into (host, port) pairs, in order.

    Accepts ``"192.168.41.60-70"`` (last-octet range), ``"127.0.0.1:47001-47011"`` (port
    range), ``"host"`` / ``"host:port"``, comma-separated combinations, or a list of those.
    Raises ValueError with a short message.
    """
    entries = hosts.split(",") if isinstance(hosts, str) else list(hosts)
    out: list[tuple[str, int]] = []
    for entry in entries:
        try:
            out.extend(_expand(str(entry), default_port))
        except ValueError as err:
            msg = str(err)
            raise ValueError(msg if msg.startswith(repr(str(entry).strip())) else f"{str(entry).strip()!r}: {msg}") from None
    if not out:
        raise ValueError("no hosts")
    return out


def unresolvable_hosts(hosts: list[str], timeout: float = 3.0) -> dict[str, str]:
    """{host: why} for the host names this machine cannot resolve (all looked up at once, ``timeout`` s each)."""
    import socket

    import trio

    failed: dict[str, str] = {}

    async def lookup(host: str) -> None:
        try:
            with trio.fail_after(timeout):
                await trio.socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except trio.TooSlowError:
            failed[host] = f"no answer from the resolver in {timeout:g} s"
        except OSError as err:
            failed[host] = err.strerror or str(err)

    async def lookup_all() -> None:
        async with trio.open_nursery() as nursery:
            for host in dict.fromkeys(hosts):
                nursery.start_soon(lookup, host)

    trio.run(lookup_all)
    return failed
