"""docs/scaling.md: the table of where the shards of the default prefix land is Redis Cluster's own
arithmetic (CRC16 of the hash tag, mod 16384; slots split evenly over the masters as
`redis-cli --cluster create` does), so an operator can trust it without a cluster at hand."""

import re

from conftest import ROOT

SCALING = ROOT / "docs" / "scaling.md"
SLOTS = 16384


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XModem), Redis Cluster's key hash."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: str) -> int:
    """CLUSTER KEYSLOT: the hash tag (the first {...} with something inside) if any, else the key."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16(key.encode()) % SLOTS


def even_split(masters: int) -> list[tuple[int, int]]:
    """The slot ranges `redis-cli --cluster create` gives `masters` masters, lowest first."""
    per, first, cursor, ranges = SLOTS / masters, 0, 0.0, []
    for i in range(masters):
        last = int(cursor + per - 1 + 0.5)  # lround of a positive number
        if last > SLOTS or i == masters - 1:
            last = SLOTS - 1
        last = max(last, first)
        ranges.append((first, last))
        first, cursor = last + 1, cursor + per
    return ranges


def master_of(slot: int, masters: int) -> int:
    """1-based: the master holding `slot` under the even split."""
    return next(i + 1 for i, (a, b) in enumerate(even_split(masters)) if a <= slot <= b)


def test_crc16_is_redis_cluster_hash():
    # The check value of CRC16/XMODEM, and slots Redis documents.
    assert crc16(b"123456789") == 0x31C3
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("foo{}{bar}") == crc16(b"foo{}{bar}") % SLOTS
    assert even_split(3) == [(0, 5460), (5461, 10922), (10923, 16383)]


def test_shard_slot_table_matches_redis_cluster():
    text = SCALING.read_text()
    header = re.search(r"^\s*\| shard \| slot \|(.*)\|$", text, re.M)
    assert header, "docs/scaling.md has no `| shard | slot | ...` table"
    masters = [int(n) for n in re.findall(r"\d+", header.group(1))]
    rows = re.findall(r"^\s*\| `(\{hmr2:\d+\})` \| (\d+) \|(.*)\|$", text, re.M)
    assert len(rows) >= 4
    for tag, slot, cells in rows:
        expected = key_slot(f"{tag}:jobs")
        assert int(slot) == expected, f"{tag}: slot {slot} in the table, Redis says {expected}"
        # Every key of a shard shares the slot (one slot per shard: the publish script needs it).
        assert {key_slot(f"{tag}:{k}") for k in ("jobs", "results", "dead")} == {expected}
        shown = [int(c) for c in re.findall(r"\d+", cells)]
        assert shown == [master_of(expected, m) for m in masters], f"{tag}: masters {shown}"


def test_the_readme_shard_hash_is_the_contract_crate_s():
    """The README's Python line for a job's shard gives the shards that `hmr2_client::shard_of`
    is pinned to (`client/tests/shard_vectors.json`, checked by the crate's unit tests)."""
    import json
    import zlib

    readme = (ROOT / "README.md").read_text()
    line = next(l for l in readme.splitlines() if l.startswith("shard = "))
    expr = line.split("=", 1)[1].split("#", 1)[0].strip()
    assert expr == "zlib.crc32(video_id.encode()) % SHARDS", line
    vectors = json.loads((ROOT / "client" / "tests" / "shard_vectors.json").read_text())
    assert len(vectors) >= 5
    for v in vectors:
        assert zlib.crc32(v["key"].encode()) == v["crc32"], v["key"]
        for n, shard in v["shards"].items():
            got = eval(expr, {"zlib": zlib}, {"video_id": v["key"], "SHARDS": int(n)})
            assert got == shard, (v["key"], n)
