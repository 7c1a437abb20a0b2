"""The job WebSocket's messages: what clients may send, what the server sends."""

import json

import pytest

from {{ cookiecutter.package }}.protocol import (
    MAX_MESSAGE,
    MAX_TEXT,
    InvalidMessage,
    chat_message,
    error_message,
    read_chat,
    state_message,
)


def test_the_server_messages_are_typed():
    assert json.loads(state_message("1", "on")) == {
        "type": "state",
        "id": "1",
        "state": "on",
    }
    assert json.loads(chat_message("1", "alice", "hi")) == {
        "type": "chat",
        "id": "1",
        "from": "alice",
        "text": "hi",
    }
    assert json.loads(error_message("why")) == {"type": "error", "error": "why"}


def test_a_chat_message_gives_its_text():
    assert read_chat('{"type": "chat", "text": "  hello  "}') == "hello"
    # Right-to-left text and joined emoji are text like any other.
    assert read_chat(json.dumps({"type": "chat", "text": "שלום"})) == "שלום"
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert read_chat(json.dumps({"type": "chat", "text": family})) == family
    longest = "é" * MAX_TEXT  # sent as \u00e9 escapes by json.dumps
    assert read_chat(json.dumps({"type": "chat", "text": longest})) == longest


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"{}", "binary"),
        ("x" * (MAX_MESSAGE + 1), "at most"),
        ("{not json", "JSON object"),
        ("[1, 2]", "may only send"),
        ('{"type": "state", "id": "1", "state": "on"}', "may only send"),
        ('{"type": "chat"}', "exactly"),
        ('{"type": "chat", "text": 3}', "non-empty string"),
        ('{"type": "chat", "text": "   "}', "non-empty string"),
        ("[" * 1500 + "]" * 1500, "JSON object"),  # deeper than the parser goes
        ('{"type": "chat", "text": {"a": [[[[]]]]}}', "non-empty string"),
        (json.dumps({"type": "chat", "text": "evil\u202e"}), "bidi control"),
        (json.dumps({"type": "chat", "text": "a\u2066b"}), "bidi control"),
        (json.dumps({"type": "chat", "text": "two\nlines"}), "control characters"),
        (json.dumps({"type": "chat", "text": "bell\u0007"}), "control characters"),
        (json.dumps({"type": "chat", "text": "\u200b\u200d \ufeff"}), "to show"),
    ],
)
def test_anything_else_is_refused_with_a_reason(message, reason):
    with pytest.raises(InvalidMessage, match=reason):
        read_chat(message)
