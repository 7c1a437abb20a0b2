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
    ],
)
def test_anything_else_is_refused_with_a_reason(message, reason):
    with pytest.raises(InvalidMessage, match=reason):
        read_chat(message)
