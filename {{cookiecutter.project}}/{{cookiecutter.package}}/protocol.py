"""The messages of the WebSockets of jobs and of the backstage: JSON with a ``type``.

From the server (never from a client):

- ``{"type": "state", "id": "1", "state": "on"}``: the job's state, on
  connect and after every change;
- ``{"type": "welcome", "name": "alice"}``: to a logged-in user entering the
  backstage;
- ``{"type": "chat", "id": "1", "from": "alice", "text": "..."}``: a message
  a client sent, as the server checked and signed it (``"id"`` is the job's,
  or ``"backstage"``);
- ``{"type": "error", "error": "..."}``: to one client, about what it sent.

From a client: ``{"type": "chat", "text": "..."}`` and nothing else.  The
server never relays what a client sends: it checks it (type, shape, size)
and emits a message of its own, so a client cannot pass for the server (a
forged ``state``) or for another client.
"""

import json
import unicodedata

#: The longest chat text, in characters.
MAX_TEXT = 500

#: The longest message a client may send: JSON may write each character of
#: the text as a six-character escape (\u00e9).
MAX_MESSAGE = 6 * MAX_TEXT + 100

#: How many invalid messages a client may send before it is disconnected.
MAX_INVALID = 5


#: Characters that change how the text around them is shown: the bidi
#: embeddings, overrides and isolates (a name ending in U+202E would show
#: the rest of its line reversed).
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class InvalidMessage(ValueError):
    """A client's message that is refused; ``str()`` says why, for the client."""


def state_message(job_id, state):
    """Return the JSON text of a state message."""
    return json.dumps({"type": "state", "id": job_id, "state": state})


def welcome_message(name):
    """Return the JSON text greeting ``name`` in the backstage."""
    return json.dumps({"type": "welcome", "name": name})


def chat_message(job_id, sender, text):
    """Return the JSON text of a chat message, signed with ``sender``."""
    return json.dumps({"type": "chat", "id": job_id, "from": sender, "text": text})


def error_message(reason):
    """Return the JSON text of an error message for one client."""
    return json.dumps({"type": "error", "error": reason})


def check_text(text, what="the text"):
    """Return ``text`` stripped, if it may be shown to others as it is.

    :raises InvalidMessage: for control characters (line breaks included),
        bidi overrides, and text that is nothing but spaces and invisible
        characters: what would let a message or a name pass for another.
    """
    for character in text:
        if character in BIDI_CONTROLS:
            raise InvalidMessage(f"{what} may not contain bidi control characters")
        if unicodedata.category(character) == "Cc":
            raise InvalidMessage(f"{what} may not contain control characters")
    # Format characters (zero-width spaces and joiners, ...) alone show nothing.
    visible = [c for c in text if not c.isspace() and unicodedata.category(c) != "Cf"]
    if not visible:
        raise InvalidMessage(f"{what} must have something to show")
    return text.strip()


def read_chat(message):
    """Return the text of a client's chat message.

    :raises InvalidMessage: for anything but ``{"type": "chat", "text": ...}``
        with 1 to :data:`MAX_TEXT` characters of text.
    """
    if not isinstance(message, str):
        raise InvalidMessage("binary messages are not accepted")
    if len(message) > MAX_MESSAGE:  # before parsing: no work for a huge one
        raise InvalidMessage(f"a message has at most {MAX_TEXT} characters of text")
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):  # deep nesting exhausts the parser
        raise InvalidMessage("a message is a JSON object") from None
    if not isinstance(data, dict) or data.get("type") != "chat":
        raise InvalidMessage('clients may only send {"type": "chat", "text": ...}')
    if set(data) != {"type", "text"}:
        raise InvalidMessage('a chat message has exactly "type" and "text"')
    text = data["text"]
    if not isinstance(text, str) or not text.strip():
        raise InvalidMessage("the text of a chat message is a non-empty string")
    if len(text) > MAX_TEXT:
        raise InvalidMessage(f"a message has at most {MAX_TEXT} characters of text")
    return check_text(text)
