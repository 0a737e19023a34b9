"""Addresses to places: lookups in a MaxMind DB built here (IPv4 and IPv6), regions, the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.geo import GeoDatabase, Locator, haversine_km
from tests.geo_data import CITIES, DATACENTERS, REGIONS, write_mmdb

REGION_NAMES = list(REGIONS)
SITES = [(lat, lon) for _, lat, lon in DATACENTERS.values()]
SITE_REGIONS = [REGION_NAMES.index(region) for region, _, _ in DATACENTERS.values()]
US, EU, AP = 0, 1, 2
US_EAST, EU_WEST, AP_SOUTH = 0, 1, 2


@pytest.fixture
def database(tmp_path: Path) -> GeoDatabase:
    return GeoDatabase.open(write_mmdb(tmp_path / "test.mmdb"))


def locator(
    database: GeoDatabase, *, countries: dict[str, int] | None = None, cache_size: int = 1000
) -> Locator:
    continents = {c: i for i, r in enumerate(REGIONS.values()) for c in r["continents"]}
    return Locator(
        database,
        countries=countries or {},
        continents=continents,
        default_region=US,
        regions=len(REGIONS),
        sites=SITES,
        site_regions=SITE_REGIONS,
        cache_size=cache_size,
    )


def test_the_database_answers_country_continent_and_position_for_ipv4_and_ipv6(
    database: GeoDatabase,
) -> None:
    """Known ranges of several countries come back with their country, continent and city."""
    expected = {
        "81.2.69.142": CITIES["81.2.69.0/24"],
        "2.17.1.1": CITIES["2.16.0.0/13"],
        "216.160.83.56": CITIES["216.160.83.0/24"],
        "186.30.236.10": CITIES["186.30.236.0/24"],
        "175.16.199.1": CITIES["175.16.199.0/24"],
        "2001:218:1::5": CITIES["2001:218::/32"],
        "2a02:ff00:1::1": CITIES["2a02:ff00::/24"],
        "2600:7000::42": CITIES["2600:7000::/24"],
    }
    for address, (country, continent, lat, lon) in expected.items():
        found = database.lookup(address)
        assert found is not None, address
        assert (found.country, found.continent) == (country, continent), address
        assert found.latitude == pytest.approx(lat)
        assert found.longitude == pytest.approx(lon)
    bhutan = database.lookup("67.43.156.1")
    assert bhutan is not None
    assert bhutan.country == "BT"
    assert bhutan.latitude is None
    assert database.lookup("9.9.9.9") is None  # in no range
    assert database.lookup("not an address") is None


def test_an_ipv4_only_database_answers_ipv6_addresses_with_nothing(tmp_path: Path) -> None:
    """Looking IPv6 up in an IPv4 database is "not found", never an exception."""
    database = GeoDatabase.open(write_mmdb(tmp_path / "v4.mmdb", ip_version=4))
    found = database.lookup("81.2.69.142")
    assert found is not None
    assert found.country == "GB"
    assert database.lookup("2001:218:1::5") is None


def test_clients_are_placed_in_their_region_with_datacenters_nearest_first(
    database: GeoDatabase,
) -> None:
    """London: eu, Dublin first; Seattle and Bogota: us; Manila and Tokyo: ap, Mumbai first."""
    places = locator(database)
    london = places.place("81.2.69.142")
    assert (london.country, london.region, london.lookup) == ("GB", EU, "located")
    assert london.order == (EU_WEST, US_EAST, AP_SOUTH)
    assert london.km[EU_WEST] == pytest.approx(haversine_km(51.5142, -0.0931, 53.35, -6.26))
    seattle = places.place("216.160.83.56")
    assert (seattle.region, seattle.order[0]) == (US, US_EAST)
    bogota = places.place("186.30.236.10")
    assert (bogota.country, bogota.region, bogota.order[0]) == ("CO", US, US_EAST)
    manila = places.place("202.196.224.1")
    assert (manila.region, manila.order[0]) == (AP, AP_SOUTH)
    tokyo = places.place("2001:218:1::5")
    assert (tokyo.country, tokyo.region, tokyo.order[0]) == ("JP", AP, AP_SOUTH)
    rome = places.place("2a02:ff00:1::1")
    assert (rome.country, rome.region, rome.order[0]) == ("IT", EU, EU_WEST)


def test_a_country_listed_in_a_region_wins_over_its_continent(database: GeoDatabase) -> None:
    """With Japan listed in region us, a Tokyo client belongs to us (and is still placed by
    its real position: Mumbai stays its nearest datacenter)."""
    tokyo = locator(database, countries={"JP": US}).place("2001:218:1::5")
    assert tokyo.region == US
    assert tokyo.order[0] == AP_SOUTH


def test_a_client_without_a_position_is_placed_at_its_regions_first_datacenter(
    database: GeoDatabase,
) -> None:
    """Country-only answers (Bhutan, Poland) keep their region; the order starts there."""
    places = locator(database)
    bhutan = places.place("67.43.156.1")
    assert (bhutan.country, bhutan.region, bhutan.lookup) == ("BT", AP, "country")
    assert bhutan.order == (AP_SOUTH, EU_WEST, US_EAST)
    assert bhutan.km[AP_SOUTH] == 0.0
    poland = places.place("2a02:d301::1")
    assert (poland.country, poland.region, poland.lookup) == ("PL", EU, "country")
    assert poland.order[0] == EU_WEST


def test_private_and_loopback_addresses_go_to_the_default_region_without_a_lookup(
    database: GeoDatabase,
) -> None:
    """10/8 is in the test database (as Germany) yet stays private: such addresses are never
    looked up; loopback, link-local, ULA and shared addresses land in the default region."""
    places = locator(database)
    for address in ("10.1.2.3", "127.0.0.1", "192.168.1.1", "169.254.1.1", "::1", "fd00::1",
                    "100.64.0.1", "::ffff:10.0.0.1"):  # fmt: skip
        place = places.place(address)
        assert (place.country, place.region, place.lookup) == ("private", US, "private"), address
        assert place.order[0] == US_EAST


def test_unresolved_and_malformed_addresses_go_to_the_default_region(
    database: GeoDatabase,
) -> None:
    """An address the database does not know, or garbage, is "unresolved" in region us."""
    places = locator(database)
    for address in ("9.9.9.9", "2001:db9::1", "", "unix:socket"):
        place = places.place(address)
        assert (place.country, place.region, place.lookup) == ("unknown", US, "unresolved")


def test_an_ipv4_mapped_ipv6_address_is_looked_up_as_ipv4(database: GeoDatabase) -> None:
    """``::ffff:81.2.69.142`` (a dual-stack socket's view of a v4 client) is London."""
    place = locator(database).place("::ffff:81.2.69.142")
    assert (place.country, place.lookup) == ("GB", "located")


def test_a_cached_address_is_not_looked_up_again(database: GeoDatabase) -> None:
    """The second request of an address costs a dict lookup: same answer, no new resolution."""
    places = locator(database)
    first = places.place("81.2.69.142")
    assert places.resolved == 1
    assert places.place("81.2.69.142") is first
    assert places.resolved == 1


def test_the_cache_is_bounded_and_keeps_addresses_in_use(database: GeoDatabase) -> None:
    """With room for 4, a stream of 100 addresses never holds more than 4; an address used
    again before it is dropped keeps its place (it moves to the young generation)."""
    places = locator(database, cache_size=4)
    hot = "81.2.69.142"
    places.place(hot)
    for i in range(100):
        places.place(f"12.0.{i}.1")
        assert places.cached <= 4
        assert places.place(hot).country == "GB"
    before = places.resolved
    places.place(hot)
    assert places.resolved == before  # still remembered after 100 others


def test_reset_forgets_every_answer(database: GeoDatabase) -> None:
    """After the database changes, answers are looked up again."""
    places = locator(database)
    places.place("81.2.69.142")
    places.reset()
    assert places.cached == 0
    places.place("81.2.69.142")
    assert places.resolved == 2


def test_haversine_matches_known_distances() -> None:
    """London-New York ~5570 km, Paris-Tokyo ~9710 km, a point to itself 0, antipodes ~20015."""
    assert haversine_km(51.5074, -0.1278, 40.7128, -74.0060) == pytest.approx(5570, rel=0.01)
    assert haversine_km(48.8566, 2.3522, 35.6762, 139.6503) == pytest.approx(9713, rel=0.01)
    assert haversine_km(10.0, 20.0, 10.0, 20.0) == 0.0
    assert haversine_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(20015.1, rel=0.001)


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    """No file: ConfigurationError saying geo.database and the path."""
    missing = tmp_path / "nowhere" / "GeoLite2-City.mmdb"
    with pytest.raises(ConfigurationError, match=r"geo\.database: .*nowhere/GeoLite2-City\.mmdb"):
        GeoDatabase.open(missing)


def test_a_corrupt_file_is_refused_naming_it(tmp_path: Path) -> None:
    """A file that is not a MaxMind DB: ConfigurationError naming it and saying so."""
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"this is not a MaxMind database\n" * 64)
    with pytest.raises(ConfigurationError, match=r"corrupt\.mmdb.* is not a MaxMind DB file"):
        GeoDatabase.open(corrupt)


def test_a_replaced_file_is_noticed_and_a_corrupt_replacement_keeps_the_old(
    tmp_path: Path,
) -> None:
    """changed() sees a file renamed over the open one; reopen() takes a good file and keeps
    serving the old one (saying why) when the new one is corrupt."""
    path = write_mmdb(tmp_path / "geo.mmdb")
    database = GeoDatabase.open(path)
    assert not database.changed()
    write_mmdb(path, cities={"81.2.69.0/24": ("US", "NA", 40.7, -74.0)}, countries={})
    assert database.changed()
    assert database.reopen()
    found = database.lookup("81.2.69.142")
    assert found is not None
    assert found.country == "US"
    assert database.reloads == 1
    assert not database.changed()

    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"garbage" * 100)
    shutil.move(broken, path)
    assert database.changed()
    assert not database.reopen()
    assert "is not a MaxMind DB file" in database.last_error
    found = database.lookup("81.2.69.142")
    assert found is not None
    assert found.country == "US"
    assert not database.changed()  # not retried until the file changes again
