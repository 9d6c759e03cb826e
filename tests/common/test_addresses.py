"""Control-plane address lists (SAMI_ADDR, --addr, --control): parsed strictly, with errors
that name the bad entry, and tried in an order that spreads clients over the replicas."""

from __future__ import annotations

import random

import pytest

from sami_common.addresses import AddressError, AddressRing, describe, parse_addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7443", ("127.0.0.1:7443",)),
        ("sami.example:7443", ("sami.example:7443",)),
        ("localhost:1", ("localhost:1",)),
        ("[::1]:7443", ("[::1]:7443",)),
        ("[fe80::1%eth0]:65535", ("[fe80::1%eth0]:65535",)),
        ("a.example:7443,b.example:7443", ("a.example:7443", "b.example:7443")),
        (" a.example:7443 , [::1]:7444 ", ("a.example:7443", "[::1]:7444")),
        ("sami_control-1:7443", ("sami_control-1:7443",)),
    ],
)
def test_good_lists_keep_their_order(text: str, expected: tuple[str, ...]) -> None:
    assert parse_addresses(text) == expected


@pytest.mark.parametrize(
    ("text", "names", "says"),
    [
        ("", "", "give HOST:PORT, or several separated by commas"),
        ("  ", "", "give HOST:PORT"),
        ("a:7443,,b:7443", "entry 2 is empty", "single commas"),
        ("a:7443,", "entry 2 is empty", "single commas"),
        (",a:7443", "entry 1 is empty", "single commas"),
        ("a:7443,b.example", "'b.example' has no port", "b.example:7443"),
        ("b.example:", "'b.example:' has no port", "b.example:7443"),
        ("[::1]", "'[::1]' has no port", "[::1]:7443"),
        (":7443", "':7443' has no host", "127.0.0.1:7443"),
        ("a:http", "the port 'http'", "a number from 1 to 65535"),
        ("a:0", "the port '0'", "a number from 1 to 65535"),
        ("a:65536", "the port '65536'", "a number from 1 to 65535"),
        ("a:-1", "the port '-1'", "a number from 1 to 65535"),
        ("::1:7443", "'::1:7443'", "IPv6 address in brackets, e.g. [::1]:7443"),
        ("[nope]:7443", "'nope' in brackets", "not an IPv6 address"),
        ("https://a.example:7443", "'https://a.example:7443'", "no scheme"),
        ("a b:7443", "'a b'", "not a host name or IP address"),
        ("a:7443,a:7443", "a:7443 is listed twice", "list each replica once"),
    ],
)
def test_bad_lists_name_the_entry_and_say_what_to_do(text: str, names: str, says: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_addresses(text)
    assert names in str(caught.value)
    assert says in str(caught.value)


def test_the_ring_stays_on_an_address_until_told_and_wraps_around() -> None:
    ring = AddressRing(("a:1", "b:2", "c:3"))
    assert (ring.current, ring.next) == ("a:1", "b:2")
    assert ring.current == "a:1"  # Looking does not move it.
    assert [ring.advance() for _ in range(4)] == ["b:2", "c:3", "a:1", "b:2"]


def test_a_ring_of_one_goes_back_to_it() -> None:
    ring = AddressRing(("a:1",))
    assert ring.next == "a:1"
    assert ring.advance() == "a:1"


def test_shuffled_rings_spread_clients_over_every_replica() -> None:
    addresses = ("a:1", "b:2", "c:3")
    rng = random.Random(7)
    rings = [AddressRing.shuffled(addresses, rng) for _ in range(300)]
    first = [ring.current for ring in rings]
    # Each replica is the first choice of about a third of the clients, not of all of them.
    assert all(60 < first.count(a) < 140 for a in addresses), first
    # A replica's clients do not all move to the same next one when it dies.
    after_a = [ring.next for ring in rings if ring.current == "a:1"]
    assert set(after_a) == {"b:2", "c:3"}
    # Every ring still holds every address once.
    assert all(sorted(ring.addresses) == list(addresses) for ring in rings)


def test_describe_names_every_address() -> None:
    assert describe(["a:1"]) == "a:1"
    assert describe(["a:1", "b:2"]) == "a:1 or b:2"
    assert describe(["a:1", "b:2", "c:3"]) == "a:1, b:2 or c:3"
