"""Which peer addresses a command may make a shard node connect to. The rules, all here:

``LOAD_SHARD``'s ``peers`` come from whoever sends the command; unchecked, a command makes the node open
BitTorrent connections to any address it names (probing a network the sender cannot reach, or pulling the
node towards a host of the sender's). So a peer *named in a command* is connected to only when its address is

1. loopback (``127.0.0.0/8``, ``::1``): this machine;
2. an address of the node's coordinator (``--coordinator``), whose tracker the node already follows;
3. inside a network of the node's trust list (``--trust-peers CIDR,...``: ``10.0.0.0/8``, ``192.168.1.7``,
   ``fd00::/8``; ``0.0.0.0/0,::/0`` trusts every address, as before this check).

Anything else is refused with an error naming the address and ``--trust-peers``. A peer is named by its IP
address: a host name is refused, not resolved (it could resolve to one address when checked and another when
libtorrent connects). IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``) are judged as the IPv4 address.

Not checked, because no command names them: the peers the coordinator's tracker or the DHT hands out, and the
node's own ``--peer`` addresses (the operator gave those).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from swarmhub.errors import ConfigError, ShardError

__all__ = ["LOOPBACK_NETWORKS", "PeerTrust", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK_NETWORKS: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``--trust-peers`` values (each a comma-separated list of CIDRs or addresses) as networks."""
    networks: list[Network] = []
    for entry in entries:
        for text in (part.strip() for part in entry.split(",")):
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
            except ValueError as exc:
                raise ConfigError(
                    f"--trust-peers {text!r} is not an IP network or address",
                    hint="give CIDRs or addresses, comma-separated, e.g. --trust-peers 10.0.0.0/8,192.168.1.7",
                ) from exc
    return tuple(networks)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _peer_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class PeerTrust:
    """The addresses a command may name as peers (see the module's docstring): loopback, ``coordinator``'s
    addresses, and ``networks``."""

    networks: tuple[Network, ...] = ()
    coordinator: frozenset[str] = frozenset()  # the coordinator's IP addresses, as resolved at the node's start

    def trusts(self, host: str) -> bool:
        address = _address(host)
        if address is None:
            return False
        if str(address) in self.coordinator:
            return True
        return any(address in network for network in (*LOOPBACK_NETWORKS, *self.networks))

    def admit(self, peer: tuple[str, int]) -> tuple[str, int]:
        """``peer`` if a command may name it; ``ShardError`` naming the address and the way to trust it."""
        host, port = peer
        if _address(host) is None:
            raise ShardError(
                f"peer {_peer_text(host, port)} is not an IP address: name a command's peers by address",
                hint="host names in LOAD_SHARD peers are not resolved",
            )
        if not self.trusts(host):
            raise ShardError(
                f"peer {_peer_text(host, port)} is not an address this node trusts "
                "(loopback, its coordinator, its --trust-peers)",
                hint=f"start the node with --trust-peers {host} (or its network's CIDR), or name no peers and "
                "let the coordinator's tracker find them",
            )
        return host.strip("[]"), port
