"""The opening handshake, without sockets (RFC 6455 section 4, RFC 7692, hixie-76)."""

from __future__ import annotations

import pytest
from webob import Request

from stargate.deflate import BoundedPerMessageDeflate
from stargate.handshake import (
    EnvironHeaders,
    HandShakeFailed,
    InvalidOrigin,
    ResponseHeaders,
    accept_key,
    build_location_url,
    check_origin,
    handshake_pre76,
    handshake_v76,
    header_tokens,
    websocket_handshake,
)

# RFC 6455 section 1.3: the sample nonce and the Sec-WebSocket-Accept it yields.
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def request_headers(**overrides):
    headers = {
        "Host": "server.example.com",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": SAMPLE_KEY,
        "Sec-WebSocket-Version": "13",
    }
    for name, value in overrides.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


def test_rfc6455_sample_key():
    assert accept_key(SAMPLE_KEY) == SAMPLE_ACCEPT


def test_accepts_the_rfc_sample_request():
    response = websocket_handshake(request_headers())
    assert isinstance(response, ResponseHeaders)
    assert dict(response) == {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": SAMPLE_ACCEPT,
    }
    assert response.status == "101 Switching Protocols"
    assert response.version == 13
    assert response.subprotocol is None
    assert response.extensions == []
    assert response.to_bytes().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert response.to_bytes().endswith(b"\r\n\r\n")


def test_header_names_are_case_insensitive_and_tokens_are_lists():
    headers = {key.lower(): value for key, value in request_headers().items()}
    headers["connection"] = "keep-alive, UPGRADE"
    headers["upgrade"] = "WebSocket"
    assert dict(websocket_handshake(headers))["Sec-WebSocket-Accept"] == SAMPLE_ACCEPT


def test_accepts_version_8():
    assert (
        websocket_handshake(request_headers(**{"Sec-WebSocket-Version": "8"})).version
        == 8
    )


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"Connection": "keep-alive"}, "Connection header"),
        ({"Connection": None}, "Connection header"),
        ({"Upgrade": "h2c"}, "Upgrade header"),
        ({"Host": None}, "Host header"),
        ({"Sec-WebSocket-Key": None}, "Sec-WebSocket-Key"),
        ({"Sec-WebSocket-Key": "not base64!"}, "Sec-WebSocket-Key"),
        ({"Sec-WebSocket-Key": "c2hvcnQ="}, "Sec-WebSocket-Key"),
        ({"Sec-WebSocket-Key": "A" * 5000}, "Sec-WebSocket-Key"),
    ],
)
def test_malformed_requests_fail_with_400_and_a_reason(overrides, reason):
    with pytest.raises(HandShakeFailed) as failure:
        websocket_handshake(request_headers(**overrides))
    assert failure.value.status_code == 400
    assert reason in failure.value.reason


@pytest.mark.parametrize("version", ["7", "14", "banana", None])
def test_unsupported_version_is_426_naming_13(version):
    with pytest.raises(HandShakeFailed) as failure:
        websocket_handshake(request_headers(**{"Sec-WebSocket-Version": version}))
    assert failure.value.status == "426 Upgrade Required"
    assert failure.value.headers == [("Sec-WebSocket-Version", "13")]


class TestOrigins:
    def test_no_origin_is_allowed(self):
        check_origin(None, None, host="example.com")

    @pytest.mark.parametrize(
        ("origin", "host", "secure"),
        [
            ("http://example.com", "example.com", False),
            ("http://EXAMPLE.com:80", "example.com", False),
            ("https://example.com", "example.com:443", True),
            ("http://127.0.0.1:6543", "127.0.0.1:6543", False),
        ],
    )
    def test_same_origin_by_default(self, origin, host, secure):
        check_origin(origin, None, host=host, secure=secure)

    @pytest.mark.parametrize(
        ("origin", "host", "secure"),
        [
            ("http://evil.example", "example.com", False),
            ("https://example.com", "example.com", False),
            ("http://example.com:8080", "example.com", False),
            ("http://example.com.evil.example", "example.com", False),
            ("null", "example.com", False),
            ("file://", "example.com", False),
            ("http://example.com:99999", "example.com", False),
        ],
    )
    def test_other_origins_are_refused_with_403(self, origin, host, secure):
        with pytest.raises(InvalidOrigin) as failure:
            check_origin(origin, None, host=host, secure=secure)
        assert failure.value.status_code == 403
        assert "stargate.allowed_origins" in failure.value.reason

    def test_listed_origins_match_exactly(self):
        allowed = ["https://app.example.com", "http://localhost:3000"]
        check_origin("https://app.example.com", allowed, host="x")
        check_origin("https://app.example.com:443", allowed, host="x")
        check_origin("http://localhost:3000", allowed, host="x")
        for origin in [
            "https://app.example.com.evil.example",
            "https://evil.example/https://app.example.com",
            "http://app.example.com",
            "https://example.com",
            "http://localhost:30000",
            "http://localhost",
        ]:
            with pytest.raises(InvalidOrigin):
                check_origin(origin, allowed, host="app.example.com")

    def test_star_allows_any_origin(self):
        check_origin("http://anything.example", ["*"], host="x")
        check_origin("null", ["*"], host="x")

    def test_the_handshake_applies_the_policy(self):
        headers = request_headers(Origin="http://evil.example")
        with pytest.raises(InvalidOrigin):
            websocket_handshake(headers)
        websocket_handshake(headers, ["http://evil.example"])
        websocket_handshake(request_headers(Origin="http://server.example.com"))


class TestSubprotocols:
    def test_server_preference_wins(self):
        headers = request_headers(**{"Sec-WebSocket-Protocol": "chat.v1, chat.v2"})
        response = websocket_handshake(headers, subprotocols=["chat.v2", "chat.v1"])
        assert response.subprotocol == "chat.v2"
        assert ("Sec-WebSocket-Protocol", "chat.v2") in response

    def test_none_offered_none_chosen(self):
        response = websocket_handshake(request_headers(), subprotocols=["chat.v2"])
        assert response.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in dict(response)

    def test_no_common_subprotocol_is_400_listing_both_sides(self):
        headers = request_headers(**{"Sec-WebSocket-Protocol": "mqtt"})
        with pytest.raises(HandShakeFailed) as failure:
            websocket_handshake(headers, subprotocols=["chat.v2"])
        assert "mqtt" in failure.value.reason
        assert "chat.v2" in failure.value.reason


class TestCompression:
    def offer(self, value, **kwargs):
        headers = request_headers(**{"Sec-WebSocket-Extensions": value})
        return websocket_handshake(headers, compression=True, **kwargs)

    def test_negotiates_permessage_deflate(self):
        response = self.offer("permessage-deflate; client_max_window_bits")
        assert dict(response)["Sec-WebSocket-Extensions"] == (
            "permessage-deflate; server_no_context_takeover; "
            "client_max_window_bits=12; server_max_window_bits=12"
        )
        [extension] = response.extensions
        assert isinstance(extension, BoundedPerMessageDeflate)
        assert extension.frame_key() == ("permessage-deflate", 12, 5, 1024)

    def test_context_takeover_when_asked_for(self):
        response = self.offer(
            "permessage-deflate; client_max_window_bits",
            compression_context_takeover=True,
        )
        assert dict(response)["Sec-WebSocket-Extensions"] == (
            "permessage-deflate; client_max_window_bits=12; server_max_window_bits=12"
        )
        [extension] = response.extensions
        assert extension.frame_key() is None  # its frames are its own
        # ... unless the client asks the server to give it up.
        response = self.offer(
            "permessage-deflate; server_no_context_takeover",
            compression_context_takeover=True,
        )
        assert response.extensions[0].frame_key() == (
            "permessage-deflate",
            12,
            5,
            1024,
        )

    def test_short_messages_go_uncompressed(self):
        [extension] = self.offer("permessage-deflate").extensions
        assert extension.min_size == 1024
        [extension] = self.offer(
            "permessage-deflate", compression_min_size=0
        ).extensions
        assert extension.min_size == 0

    @pytest.mark.parametrize(
        ("offer", "answer"),
        [
            # Smaller windows than offered: the server chooses, as RFC 7692 lets it.
            (
                "permessage-deflate; client_max_window_bits=15",
                "client_max_window_bits=12",
            ),
            (
                "permessage-deflate; client_max_window_bits=10",
                "client_max_window_bits=10",
            ),
            (
                "permessage-deflate; server_max_window_bits=9",
                "server_max_window_bits=9",
            ),
            (
                "permessage-deflate; server_max_window_bits=15",
                "server_max_window_bits=12",
            ),
        ],
    )
    def test_windows_are_bounded_as_websockets_bounds_them(self, offer, answer):
        response = dict(self.offer(offer))["Sec-WebSocket-Extensions"]
        assert answer in response.split("; ")

    def test_bound_is_passed_to_the_extension(self):
        [extension] = self.offer("permessage-deflate", max_message_size=1234).extensions
        assert extension.max_size == 1234

    def test_plain_offer(self):
        # The client keeps its window (it did not offer to lower it); the
        # server bounds its own.
        response = self.offer("permessage-deflate")
        assert dict(response)["Sec-WebSocket-Extensions"] == (
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"
        )

    def test_off_when_disabled(self):
        headers = request_headers(**{"Sec-WebSocket-Extensions": "permessage-deflate"})
        response = websocket_handshake(headers, compression=False)
        assert "Sec-WebSocket-Extensions" not in dict(response)
        assert response.extensions == []

    @pytest.mark.parametrize(
        "offer",
        [
            "x-webkit-deflate-frame",
            "permessage-deflate; unknown_parameter",
            "permessage-deflate; client_max_window_bits=99",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover; "
            "server_no_context_takeover",
        ],
    )
    def test_unacceptable_offers_are_declined(self, offer):
        response = self.offer(offer)
        assert "Sec-WebSocket-Extensions" not in dict(response)

    def test_first_acceptable_offer_wins(self):
        response = self.offer(
            "permessage-deflate; bogus, permessage-deflate; server_no_context_takeover"
        )
        assert dict(response)["Sec-WebSocket-Extensions"] == (
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"
        )


def test_header_tokens():
    assert header_tokens(" Keep-Alive , Upgrade,,") == ["keep-alive", "upgrade"]
    assert header_tokens(None) == []


class TestLocation:
    def test_from_a_webob_request(self):
        request = Request.blank(
            "/jobs/1/?x=1",
            base_url="https://example.com",
            headers={"Host": "example.com"},
        )
        assert build_location_url(request.headers) == "wss://example.com/jobs/1/?x=1"

    def test_from_a_plain_mapping(self):
        assert build_location_url({"Host": "h:1"}) == "ws://h:1/"
        assert build_location_url({"Host": "h"}, path="/a", secure=True) == "wss://h/a"

    def test_needs_a_host(self):
        with pytest.raises(HandShakeFailed, match="Host"):
            build_location_url({})


class TestLegacy:
    # The sample exchange of draft-hixie-thewebsocketprotocol-76, section 1.3.
    HIXIE76 = {
        "Host": "example.com",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key2": "12998 5 Y3 1  .P00",
        "Sec-WebSocket-Protocol": "sample",
        "Upgrade": "WebSocket",
        "Sec-WebSocket-Key1": "4 @1  46546xW%0l 1 5",
        "Origin": "http://example.com",
    }

    def test_hixie76_sample(self):
        request = Request.blank("/demo", headers=self.HIXIE76)
        response = handshake_v76(
            request.headers, [("Upgrade", "WebSocket")], b"^n:ds[4U"
        )
        assert response.body == b"8jKS'y:G*Co,Wxa-"
        assert response.status == "101 WebSocket Protocol Handshake"
        assert dict(response) == {
            "Upgrade": "WebSocket",
            "Sec-WebSocket-Origin": "http://example.com",
            "Sec-WebSocket-Location": "ws://example.com/demo",
            "Sec-WebSocket-Protocol": "sample",
        }
        assert response.to_bytes().endswith(b"\r\n\r\n8jKS'y:G*Co,Wxa-")

    def test_hixie76_through_websocket_handshake(self):
        response = websocket_handshake(
            self.HIXIE76, ["*"], legacy=True, key3=b"^n:ds[4U"
        )
        assert response.version == 76
        assert response.body == b"8jKS'y:G*Co,Wxa-"

    def test_legacy_is_off_by_default(self):
        with pytest.raises(HandShakeFailed) as failure:
            websocket_handshake(self.HIXIE76, ["*"], key3=b"^n:ds[4U")
        assert failure.value.status_code == 426

    def test_legacy_origin_policy_applies(self):
        with pytest.raises(InvalidOrigin):
            websocket_handshake(
                {**self.HIXIE76, "Host": "other.example"}, legacy=True, key3=b"^n:ds[4U"
            )

    @pytest.mark.parametrize(
        ("key1", "key3", "reason"),
        [
            ("4 @1  46546xW%0l 1 5", b"short", "8 bytes"),
            ("nospaces123", b"^n:ds[4U", "digits and spaces"),
            ("no digits at all", b"^n:ds[4U", "digits and spaces"),
            ("1 3  ", b"^n:ds[4U", "multiple"),
        ],
    )
    def test_bad_hixie76_keys(self, key1, key3, reason):
        headers = {**self.HIXIE76, "Sec-WebSocket-Key1": key1}
        with pytest.raises(HandShakeFailed, match=reason):
            handshake_v76(headers, [], key3)

    def test_hixie76_needs_an_origin(self):
        headers = {**self.HIXIE76}
        del headers["Origin"]
        with pytest.raises(HandShakeFailed, match="Origin"):
            handshake_v76(headers, [], b"^n:ds[4U")

    def test_hixie75(self):
        headers = {
            "Host": "example.com",
            "Connection": "Upgrade",
            "Upgrade": "WebSocket",
            "Origin": "http://example.com",
            "WebSocket-Protocol": "sample",
        }
        response = websocket_handshake(headers, legacy=True)
        assert response.version == 75
        assert response.status == "101 Web Socket Protocol Handshake"
        assert dict(response) == {
            "Upgrade": "WebSocket",
            "Connection": "Upgrade",
            "WebSocket-Origin": "http://example.com",
            "WebSocket-Location": "ws://example.com/",
            "WebSocket-Protocol": "sample",
        }
        assert response.body == b""

    def test_hixie75_needs_an_origin(self):
        with pytest.raises(HandShakeFailed, match="Origin"):
            handshake_pre76({"Host": "example.com"}, [])


class TestEnvironHeaders:
    """The view's cheap headers give every handshake what request.headers gives."""

    CASES = {
        "rfc6455": {
            "Host": "h:1",
            "Upgrade": "WebSocket",
            "Connection": "keep-alive, Upgrade",
            "Sec-WebSocket-Key": SAMPLE_KEY,
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Protocol": "b, a",
            "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
            "Origin": "http://h:1",
            "User-Agent": "not read",
        },
        "hixie-76": {**TestLegacy.HIXIE76, "Host": "h:1", "Origin": "http://h:1"},
        "hixie-75": {
            "Host": "h:1",
            "Upgrade": "WebSocket",
            "Connection": "Upgrade",
            "Origin": "http://h:1",
            "WebSocket-Protocol": "sample",
        },
        "bad origin": {
            "Host": "h:1",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": SAMPLE_KEY,
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Origin": "http://elsewhere",
        },
    }

    @staticmethod
    def outcome(headers):
        try:
            response = websocket_handshake(
                headers,
                None,
                subprotocols=["a", "b"],
                compression=True,
                legacy=True,
                key3=b"^n:ds[4U",
            )
        except HandShakeFailed as refusal:
            return type(refusal), refusal.status, refusal.reason
        return response.to_bytes(), response.version, response.subprotocol

    @pytest.mark.parametrize("name", sorted(CASES))
    def test_same_outcome_as_request_headers(self, name):
        request = Request.blank("/ws/?room=1", headers=self.CASES[name])
        cheap = EnvironHeaders(request.environ)
        assert "user-agent" not in cheap  # only what a handshake reads
        assert self.outcome(cheap) == self.outcome(request.headers)

    def test_location_comes_from_the_environ(self):
        request = Request.blank(
            "https://h:1/ws/?room=1", headers=self.CASES["hixie-75"]
        )
        headers = EnvironHeaders(request.environ)
        assert headers.environ is request.environ
        assert build_location_url(headers) == "wss://h:1/ws/?room=1"
