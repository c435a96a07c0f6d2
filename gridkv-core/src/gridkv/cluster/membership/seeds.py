"""Seeds named through DNS: the ``dns:HOST:PORT`` entries of ``seed_addrs``.

Such an entry stands for every A and AAAA record of HOST, each a seed at PORT
(``10.0.0.7:7946``, ``[fd00::7]:7946``), so a Kubernetes headless Service, whose name resolves
to the addresses of its pods, is a seed list that follows the pods. The membership driver
looks the names up before every join attempt (pods that appear later are found) and again
every push-pull interval once joined. A lookup runs in the event loop's resolver
(``loop.getaddrinfo``, never blocking the loop) and is bounded by ``network.timeout``. A name
that resolves to nothing is reported and tried again; it never stops the other seeds.

The addresses are the same text on every transport: with the memory transport a DNS seed
finds the nodes whose ``local_address`` is such an ``IP:port``, and only those.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from gridkv.base.sections import dns_seed

__all__ = ["MAX_SEEDS_PER_NAME", "SeedLookup", "canonical", "lookup", "resolve"]

#: Addresses one name contributes to a lookup at most; of a name with more records, this many
#: are picked at random at each lookup (joining needs one that answers, and every join
#: attempt syncs with each seed).
MAX_SEEDS_PER_NAME = 16


@dataclass(frozen=True, slots=True)
class SeedLookup:
    """The seeds of one lookup.

    :ivar addresses: the seeds to contact, in the order of ``seed_addrs`` (a name's records
        sorted), without duplicates and without this node's own address.
    :ivar found: each ``dns:`` entry that resolved, with its addresses (this node's included).
    :ivar problems: each ``dns:`` entry that resolved to no address, with the reason.
    """

    addresses: list[str] = field(default_factory=list)
    found: dict[str, list[str]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def alone(self) -> bool:
        """Whether every name resolved, to nothing but this node: no other node to join.

        A node in that position starts the cluster, as a node whose only seed is itself does.
        """
        return bool(self.found) and not self.problems and not self.addresses


def canonical(address: str) -> str:
    """``address`` with an IP literal host in one spelling (``[::1]:7946``); others as given.

    Lets this node recognise its own address among the records of a name.
    """
    host, _, port = address.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return address
    return f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip.compressed}:{port}"


async def resolve(host: str, port: int, timeout: float) -> list[str]:
    """Every A and AAAA record of ``host``, as sorted ``IP:port`` / ``[v6]:port`` seeds.

    :raises OSError: the resolver failed (``socket.gaierror`` for an unknown name).
    :raises TimeoutError: no answer within ``timeout`` seconds.
    :raises UnicodeError: ``host`` is no valid (IDNA) name.
    """
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    seeds = {
        canonical(f"{info[4][0]}:{port}")
        for info in infos
        if info[0] in (socket.AF_INET, socket.AF_INET6)
    }
    return sorted(seeds)


async def lookup(
    entries: Sequence[str], own_address: str, timeout: float, rng: random.Random
) -> SeedLookup:
    """The seeds ``entries`` (``seed_addrs``) stand for now, their names resolved at once.

    :param own_address: this node's address, left out of the seeds.
    :param timeout: seconds each name may take to resolve.
    :param rng: picks a name's addresses when it has more than :data:`MAX_SEEDS_PER_NAME`.
    """
    names = {entry: dns_seed("seed_addrs", entry) for entry in entries}
    wanted = {entry: name for entry, name in names.items() if name is not None}
    answers = await asyncio.gather(
        *(resolve(host, port, timeout) for host, port in wanted.values()),
        return_exceptions=True,
    )
    result = SeedLookup()
    for entry, answer in zip(wanted, answers, strict=True):
        if isinstance(answer, Exception):
            # Whatever the resolver raised, the name gave no address this time; the join
            # goes on with the other seeds and asks again (cancellation is no Exception).
            result.problems[entry] = _reason(answer)
        elif isinstance(answer, BaseException):
            raise answer
        elif not answer:
            result.problems[entry] = "no A or AAAA record"
        else:
            result.found[entry] = answer
    seen = {canonical(own_address)}
    for entry in entries:
        if entry in wanted:
            addresses = [a for a in result.found.get(entry, []) if canonical(a) not in seen]
            if len(addresses) > MAX_SEEDS_PER_NAME:
                addresses = sorted(rng.sample(addresses, MAX_SEEDS_PER_NAME))
        else:
            addresses = [entry]
        for address in addresses:
            if canonical(address) not in seen:
                seen.add(canonical(address))
                result.addresses.append(address)
    return result


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer from the resolver in time"
    if isinstance(exc, socket.gaierror):
        return f"{exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
