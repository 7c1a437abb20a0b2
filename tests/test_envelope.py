"""The envelope of multiplexed connections: frames in, commands out, and back."""

from __future__ import annotations

import pytest

from stargate.envelope import (
    MAX_ID_LENGTH,
    MAX_PATH_LENGTH,
    Closed,
    Error,
    Forward,
    Subscribe,
    Subscribed,
    Unsubscribe,
    closed_frame,
    error_frame,
    forward_frame,
    message_prefix,
    parse_client_frame,
    parse_server_frame,
    subscribe_frame,
    subscribed_frame,
    unsubscribe_frame,
)


def test_commands_of_the_client():
    assert parse_client_frame('["subscribe","a","/jobs/1/"]') == Subscribe(
        "a", "/jobs/1/"
    )
    assert parse_client_frame('["subscribe","a","/jobs/1/?x=1",""]') == Subscribe(
        "a", "/jobs/1/?x=1", ""
    )
    assert parse_client_frame('["subscribe","a","/j/","e1:5"]').since == "e1:5"
    assert parse_client_frame('["subscribe","a","/j/",null]').since is None
    assert parse_client_frame('["unsubscribe","a"]') == Unsubscribe("a")


def test_messages_of_the_client_keep_their_type():
    assert parse_client_frame('"a"\n{"x": "1\\n2"}') == Forward("a", '{"x": "1\\n2"}')
    assert parse_client_frame('"a"\n') == Forward("a", "")
    assert parse_client_frame(b'"b"\n\x00\n\xff') == Forward("b", b"\x00\n\xff")
    assert parse_client_frame(bytearray(b'"\\u00e9"\nz')) == Forward("\u00e9", b"z")


def test_what_the_client_builds_parses_back():
    for frame, command in [
        (subscribe_frame("1", "/a/"), Subscribe("1", "/a/")),
        (subscribe_frame("1", "/a/", "e:2"), Subscribe("1", "/a/", "e:2")),
        (unsubscribe_frame("x\ny"), Unsubscribe("x\ny")),
        (forward_frame("x\ny", "hi\n"), Forward("x\ny", "hi\n")),
        (forward_frame("i", b"\x01"), Forward("i", b"\x01")),
    ]:
        assert parse_client_frame(frame) == command


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("nonsense", "not JSON"),
        (b"\xff\n", "not UTF-8"),
        ('"a"', "needs a newline"),
        ('["subscribe","a","/x/"]\n', "a text frame of one line"),
        (b'["subscribe","a","/x/"]', "a text frame of one line"),
        ("{}", "a JSON array"),
        ("[]", "a JSON array"),
        ("[1]", "a JSON array"),
        ('["subscribe","a"]', "not a command of stargate.v1: 'subscribe' with 1"),
        ('["publish","a","/x/"]', "not a command of stargate.v1: 'publish'"),
        ('["unsubscribe"]', "unsubscribe ID"),
        ('["subscribe","a","x/"]', "a path starts with /"),
        ('["subscribe","a",7]', "a path starts with /"),
        ('["subscribe","a","/x/",5]', "since is a string or null"),
        ('["subscribe","","/x/"]', "a string of 1 to 64 characters"),
        ('["subscribe",1,"/x/"]', "a string of 1 to 64 characters"),
        (f'"{"i" * (MAX_ID_LENGTH + 1)}"\nz', "a string of 1 to 64"),
        (f'["subscribe","a","/{"p" * MAX_PATH_LENGTH}"]', "at most 2048"),
    ],
)
def test_frames_that_are_not_of_the_protocol_say_why(frame, reason):
    with pytest.raises(ValueError, match=reason):
        parse_client_frame(frame)


def test_frames_of_the_server():
    assert subscribed_frame("a") == '["subscribed","a"]'
    assert closed_frame("a", 4403, "Forbidden") == '["closed","a",4403,"Forbidden"]'
    assert error_frame(None, "why") == '["error",null,"why"]'
    assert message_prefix("a") == '"a"\n'
    assert parse_server_frame(subscribed_frame("a")) == Subscribed("a")
    assert parse_server_frame(closed_frame("a", 1000, "")) == Closed("a", 1000, "")
    assert parse_server_frame(error_frame("a", "why")) == Error("a", "why")
    assert parse_server_frame('"a"\nsync e 0\n') == Forward("a", "sync e 0\n")
    assert parse_server_frame(b'"a"\n\x00') == Forward("a", b"\x00")


@pytest.mark.parametrize(
    "frame", ['"a"', '["closed","a"]', '["subscribed","a"]\nx', "[]", "{}", "[5]"]
)
def test_server_frames_that_are_not_of_the_protocol(frame):
    with pytest.raises(ValueError):
        parse_server_frame(frame)
