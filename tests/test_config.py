"""Parsing the stargate.* settings."""

from __future__ import annotations

import pytest
from pyramid.registry import Registry

from stargate.config import Settings, get_settings, parse_settings
from stargate.exceptions import IncorrectlyConfigured


def test_defaults():
    settings = parse_settings({})
    assert settings == Settings()
    assert settings.allowed_origins is None
    assert settings.max_message_size == 1024 * 1024
    assert settings.compression is True
    assert settings.legacy_protocols is False
    assert settings.broker == "memory://"
    assert settings.max_message_rate == 0  # no limits unless asked for
    assert settings.max_connections_per_client == 0
    assert parse_settings(None) == Settings()


def test_every_setting_parses_from_ini_text():
    settings = parse_settings(
        {
            "stargate.allowed_origins": "https://a.example\n  http://b.example:8080",
            "stargate.max_message_size": "16 MiB",
            "stargate.ping_interval": "2.5",
            "stargate.ping_timeout": "3",
            "stargate.close_timeout": "4",
            "stargate.send_queue_size": "64",
            "stargate.compression": "off",
            "stargate.broker": "memory://",
            "stargate.broker_channel_prefix": " app1: ",
            "stargate.legacy_protocols": "yes",
            "stargate.max_message_rate": "2.5",
            "stargate.max_message_burst": "10",
            "stargate.max_connections_per_client": "20",
            "pyramid.reload_templates": "true",
        }
    )
    assert settings == Settings(
        allowed_origins=("https://a.example", "http://b.example:8080"),
        max_message_size=16 * 1024 * 1024,
        ping_interval=2.5,
        ping_timeout=3.0,
        close_timeout=4.0,
        send_queue_size=64,
        compression=False,
        broker="memory://",
        broker_channel_prefix="app1:",
        legacy_protocols=True,
        max_message_rate=2.5,
        max_message_burst=10,
        max_connections_per_client=20,
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1024", 1024), ("64KiB", 65536), ("2 mib", 2 * 1024 * 1024), ("10k", 10240)],
)
def test_sizes(value, expected):
    assert (
        parse_settings({"stargate.max_message_size": value}).max_message_size
        == expected
    )


def test_origins_from_a_list_and_star():
    assert parse_settings({"stargate.allowed_origins": ["*"]}).allowed_origins == ("*",)
    assert parse_settings({"stargate.allowed_origins": ""}).allowed_origins is None


def test_booleans_pass_through():
    assert parse_settings({"stargate.compression": False}).compression is False
    assert Settings().compression_context_takeover is False
    assert Settings().compression_min_size == 1024
    no_minimum = parse_settings({"stargate.compression_min_size": "0"})
    assert no_minimum.compression_min_size == 0
    assert parse_settings(
        {"stargate.compression_context_takeover": "true"}
    ).compression_context_takeover


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("stargate.max_message_size", "lots", "whole number of bytes"),
        ("stargate.max_message_size", "0", "at least 1 byte"),
        ("stargate.max_message_size", "5 GB", "whole number of bytes"),
        ("stargate.ping_interval", "-1", "0 or more"),
        ("stargate.ping_interval", "nan", "0 or more"),
        ("stargate.ping_interval", "inf", "0 or more"),
        ("stargate.ping_timeout", "0", "above 0"),
        ("stargate.close_timeout", "soon", "could not convert"),
        ("stargate.send_queue_size", "0", "at least 1"),
        ("stargate.compression", "maybe", "true or false"),
        ("stargate.compression_min_size", "-1", "0 or more"),
        ("stargate.broker", "kafka://x", "memory://"),
        ("stargate.allowed_origins", "example.com", "not an origin"),
        ("stargate.allowed_origins", "https://example.com/app", "no path"),
        ("stargate.allowed_origins", "ftp://example.com", "not an origin"),
        ("stargate.max_message_rate", "-1", "messages a second, 0 or more"),
        ("stargate.max_message_rate", "inf", "messages a second, 0 or more"),
        ("stargate.max_message_burst", "-5", "whole number, 0 or more"),
        ("stargate.max_connections_per_client", "some", "invalid literal"),
    ],
)
def test_bad_values_name_the_setting_and_the_value(key, value, expected):
    with pytest.raises(IncorrectlyConfigured) as failure:
        parse_settings({key: value})
    message = str(failure.value)
    assert key in message
    assert repr(value) in message
    assert expected in message


def test_unknown_setting_is_refused_with_the_list():
    with pytest.raises(IncorrectlyConfigured) as failure:
        parse_settings({"stargate.max_mesage_size": "1"})
    assert "stargate.max_mesage_size" in str(failure.value)
    assert "stargate.max_message_size" in str(failure.value)


def test_get_settings_parses_once_per_registry():
    registry = Registry()
    registry.settings = {"stargate.send_queue_size": "7"}
    first = get_settings(registry)
    assert first.send_queue_size == 7
    registry.settings = {"stargate.send_queue_size": "8"}
    assert get_settings(registry) is first
