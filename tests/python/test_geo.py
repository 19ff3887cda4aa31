"""Geo commands through redis-py (RESP2 and RESP3). Expected values are redis-server's (run with
FERRITE_TEST_REDIS_SERVER to check); a brute-force search checks GEOSEARCH on random points."""

from __future__ import annotations

import math
import random

from helpers import SYNTAX, WRONGTYPE, cmd_error


def _sicily(r):
    assert r.geoadd("Sicily", [13.361389, 38.115556, "Palermo", 15.087269, 37.502669, "Catania"]) == 2


def test_geoadd_geopos_geodist_geohash(r):
    _sicily(r)
    assert r.zscore("Sicily", "Palermo") == 3479099956230698
    assert r.geodist("Sicily", "Palermo", "Catania") == 166274.1516
    assert r.geodist("Sicily", "Palermo", "Catania", "km") == 166.2742
    assert r.geodist("Sicily", "Palermo", "nope") is None
    assert r.geohash("Sicily", "Palermo", "Catania", "nope") == ["sqc8b49rny0", "sqdtr74hyu0", None]
    pos = r.geopos("Sicily", "Palermo", "nope")
    assert pos[1] is None
    assert abs(pos[0][0] - 13.36138933897018433) < 1e-12
    assert cmd_error(r, "GEOADD", "Sicily", "200", "100", "x") == (
        "ERR invalid longitude,latitude pair 200.000000,100.000000"
    )
    assert cmd_error(r, "GEOADD", "Sicily", "NX", "XX", "1", "2", "x") == SYNTAX
    r.set("s", "x")
    assert cmd_error(r, "GEOPOS", "s", "a") == WRONGTYPE


def test_searches_and_store(r):
    _sicily(r)
    res = r.geosearch("Sicily", longitude=15, latitude=37, radius=200, unit="km", withdist=True, sort="ASC")
    assert res == [["Catania", 56.4413], ["Palermo", 190.4424]]
    assert r.georadius("Sicily", 15, 37, 200, unit="km", sort="ASC", count=1) == ["Catania"]
    assert r.georadiusbymember("Sicily", "Palermo", 100, unit="km") == ["Palermo"]
    assert r.geosearchstore("dst", "Sicily", member="Palermo", radius=500, unit="km", storedist=True) == 2
    assert r.zscore("dst", "Palermo") == 0
    assert r.georadius("Sicily", 15, 37, 200, unit="km", store="st") == 2
    assert r.zcard("st") == 2
    assert cmd_error(r, "GEORADIUS_RO", "Sicily", 15, 37, 200, "km", "STORE", "x") == SYNTAX
    assert cmd_error(r, "GEOSEARCH", "Sicily", "FROMMEMBER", "nope", "BYRADIUS", 1, "km") == (
        "ERR could not decode requested zset member"
    )


def _haversine(lon1, lat1, lon2, lat2):
    r = 6372797.560856
    lon1, lat1, lon2, lat2 = map(math.radians, (lon1, lat1, lon2, lat2))
    u = math.sin((lat2 - lat1) / 2)
    v = math.sin((lon2 - lon1) / 2)
    return 2 * r * math.asin(math.sqrt(u * u + math.cos(lat1) * math.cos(lat2) * v * v))


def test_radius_search_matches_brute_force(r):
    rnd = random.Random(11)
    points = []
    for i in range(400):
        lon, lat = rnd.uniform(-10, 10), rnd.uniform(40, 50)
        points.append((lon, lat, f"p{i}"))
    r.geoadd("pts", [x for p in points for x in p])
    for _ in range(20):
        lon, lat, radius = rnd.uniform(-5, 5), rnd.uniform(42, 48), rnd.uniform(10, 300)
        got = set(r.geosearch("pts", longitude=lon, latitude=lat, radius=radius, unit="km"))
        stored = {m: r.geopos("pts", m)[0] for m in got}
        for p in points:
            d = _haversine(lon, lat, *r.geopos("pts", p[2])[0]) / 1000 if p[2] in stored else None
            exact = _haversine(lon, lat, p[0], p[1]) / 1000
            if exact < radius - 0.5:
                assert p[2] in got, (p, exact, radius)
            if exact > radius + 0.5:
                assert p[2] not in got, (p, exact, radius, d)
