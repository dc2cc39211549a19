"""Emulated WAN latency: region pairs to delays, the --wan-latency setting, addresses to clusters."""

from __future__ import annotations

import pytest

from isthmus.core.wan import (
    AUTO,
    OFF,
    SAME_METRO_RTT_MS,
    UNKNOWN_PAIR_RTT_MS,
    WanSetting,
    WanSettingError,
    cluster_number_of,
    due_at,
    metro,
    parse_file,
    parse_setting,
)


def test_the_walkthrough_regions_are_about_150_ms_apart_both_ways() -> None:
    assert AUTO.rtt_ms("sfo3", "syd1") == 150
    assert AUTO.rtt_ms("syd1", "sfo3") == 150
    assert AUTO.one_way_s("sfo3", "syd1") == pytest.approx(0.075)


def test_within_a_region_nothing_is_added() -> None:
    assert AUTO.rtt_ms("sfo3", "sfo3") == 0
    assert WanSetting(300).rtt_ms("syd1", "syd1") == 0


def test_regions_of_one_metro_are_close_and_unknown_pairs_get_the_default() -> None:
    assert AUTO.rtt_ms("nyc1", "nyc3") == SAME_METRO_RTT_MS
    assert AUTO.rtt_ms("nyc3", "ams3") == 80
    assert AUTO.rtt_ms("mars1", "sfo3") == UNKNOWN_PAIR_RTT_MS
    assert metro("SFO3") == "sfo" and metro("us-east-1") == "us-east-1"


def test_a_fixed_setting_applies_to_every_cross_region_pair_and_zero_is_off() -> None:
    assert WanSetting(40).rtt_ms("sfo3", "syd1") == 40
    assert WanSetting(40).rtt_ms("ams3", "fra1") == 40
    assert not OFF.enabled and OFF.rtt_ms("sfo3", "syd1") == 0 and OFF.one_way_s("sfo3", "syd1") == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("auto", AUTO), ("", AUTO), ("150", WanSetting(150)), ("150ms", WanSetting(150)),
    (" 12.5 ", WanSetting(12.5)), ("0", OFF), ("off", OFF),
])
def test_parse_setting(text: str, expected: WanSetting) -> None:
    assert parse_setting(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("fast", "is not a round trip in milliseconds"),
    ("-5", "out of range"),
    ("nan", "out of range"),
    ("99999", "out of range"),
])
def test_bad_settings_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(WanSettingError, match=message):
        parse_setting(text)


def test_the_file_round_trips_and_bad_files_are_refused() -> None:
    for setting in (AUTO, OFF, WanSetting(150)):
        assert parse_file(setting.to_json()) == setting
    with pytest.raises(WanSettingError, match="not JSON"):
        parse_file("{")
    with pytest.raises(WanSettingError, match="needs"):
        parse_file('{"wan_latency": true}')
    with pytest.raises(WanSettingError, match="needs"):
        parse_file("[]")


def test_addresses_name_their_cluster() -> None:
    assert cluster_number_of("127.60.64.10") == 60
    assert cluster_number_of("127.61.192.1") == 61
    assert cluster_number_of("127.0.0.1") is None
    assert cluster_number_of("127.255.0.1") is None
    assert cluster_number_of("10.1.2.3") is None
    assert cluster_number_of("127.1.2") is None
    assert cluster_number_of("127.x.0.1") is None
    assert cluster_number_of("::1") is None


def test_client_bytes_wait_for_the_handshake_answers_take_one_way() -> None:
    # 75 ms each way; the connection opened at t=10.
    assert due_at(10.0, opened_at=10.0, one_way=0.075, towards_server=True) == pytest.approx(10.225)
    assert due_at(10.5, opened_at=10.0, one_way=0.075, towards_server=True) == pytest.approx(10.575)
    assert due_at(10.3, opened_at=10.0, one_way=0.075, towards_server=False) == pytest.approx(10.375)
    assert due_at(10.0, opened_at=10.0, one_way=0.0, towards_server=True) == 10.0
