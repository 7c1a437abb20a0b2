"""WebSocketAwareResource and the in-memory broker."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyramid import testing
from pyramid.traversal import resource_path

from stargate.brokers import IBroker, MemoryBroker, get_broker
from stargate.connection import Connection, State
from stargate.exceptions import IncorrectlyConfigured
from stargate.resource import WebSocketAwareResource
from tests.peers import Peer, deflate_peer


class Job(WebSocketAwareResource):
    def __init__(self, name, parent=None):
        self.__name__ = name
        self.__parent__ = parent


@pytest.fixture
def config():
    with testing.testConfig() as config:
        config.include("stargate")
        yield config


def tree():
    root = Job("")
    jobs = Job("jobs", root)
    return root, Job("1", jobs), Job("2", jobs)


def test_channel_is_the_resource_path():
    root, one, _ = tree()
    assert root.channel == "/"
    assert one.channel == "/jobs/1"


@given(st.lists(st.text(max_size=8) | st.none(), min_size=1, max_size=5))
def test_channel_is_what_pyramid_calls_the_resource_path(names):
    resource = None
    for name in names:  # the first is the root
        resource = Job(name, resource)
    assert resource.channel == resource_path(resource)


def test_channel_follows_renames_and_moves():
    root, one, two = tree()
    assert one.channel == "/jobs/1"
    one.__name__ = "one"
    assert one.channel == "/jobs/one"
    one.__parent__.__name__ = "tasks"
    assert (one.channel, two.channel) == ("/tasks/one", "/tasks/2")
    one.__parent__ = Job("elsewhere", root)
    assert one.channel == "/elsewhere/one"


def test_a_root_without_a_parent_attribute_is_still_the_root():
    class Root:
        __name__ = None

    class Child(WebSocketAwareResource):
        __name__, __parent__ = "child", Root()

    assert Child().channel == "/child" == resource_path(Child())


def test_send_reaches_every_listener_of_the_resource_only(config):
    _, one, two = tree()
    first, second, other = Peer(), Peer(), Peer()
    one.add_listener(first.conn)
    one.add_listener(second.conn)
    two.add_listener(other.conn)
    assert one.listeners == {first.conn, second.conn}
    one.send("state")
    one.send(b"\x00")
    assert first.messages(0.05) == ["state", b"\x00"]
    assert second.messages(0.05) == ["state", b"\x00"]
    assert other.messages(0.05) == []


def test_listeners_are_shared_by_equal_paths(config):
    # A resource tree built anew for every request still reaches the listeners.
    _, one, _ = tree()
    peer = Peer()
    one.add_listener(peer.conn)
    _, one_again, _ = tree()
    assert one_again.listeners == {peer.conn}
    one_again.send("hello")
    assert peer.messages(0.05) == ["hello"]


def test_closed_listeners_are_removed_automatically(config):
    _, one, _ = tree()
    staying, leaving = Peer(), Peer()
    one.add_listener(staying.conn)
    one.add_listener(leaving.conn)
    leaving.conn.abort()
    assert one.listeners == {staying.conn}
    one.send("still delivered")
    assert staying.messages(0.05) == ["still delivered"]


def test_remove_listener(config):
    _, one, _ = tree()
    peer = Peer()
    one.add_listener(peer.conn)
    one.remove_listener(peer.conn)
    one.remove_listener(peer.conn)  # twice is harmless
    assert one.listeners == frozenset()
    one.send("nobody")
    assert peer.messages(0.05) == []


def test_adding_a_closed_connection_does_nothing(config):
    _, one, _ = tree()
    peer = Peer()
    peer.conn.close()
    one.add_listener(peer.conn)
    assert one.listeners == frozenset()


def test_broker_forgets_listeners_that_closed_between_checks(config):
    broker = get_broker()
    peer = Peer()
    broker.local.add("/x", peer.conn)  # bypasses the close callback on purpose
    peer.conn.protocol.state = State.CLOSED
    assert broker.local.deliver("/x", "m") == 0
    assert broker.listeners("/x") == frozenset()
    assert broker.local.channels() == []


def test_a_broadcast_encodes_once_per_kind_of_listener(monkeypatch):
    encoded = []
    encode = Connection.encode
    monkeypatch.setattr(
        Connection, "encode", lambda conn, m: encoded.append(conn) or encode(conn, m)
    )
    broker = MemoryBroker()
    plain = [Peer(), Peer()]
    shared = [deflate_peer(context_takeover=False) for _ in range(2)]
    small = deflate_peer("permessage-deflate; server_max_window_bits=9", False)
    own = [deflate_peer(context_takeover=True) for _ in range(2)]  # context
    everyone = [*plain, *shared, small, *own]
    for peer in everyone:
        broker.subscribe("/c", peer.conn)
    for _ in range(2):
        broker.publish("/c", "all of you " * 10)
    assert len(encoded) == 2 * 3  # plain, shared, small: once each a broadcast
    for peer in everyone:
        assert peer.messages(0.05) == ["all of you " * 10] * 2
    own[0].conn.close()
    broker.local.add("/c", own[0].conn)
    assert broker.local.deliver("/c", "again") == len(everyone) - 1


def test_close_forgets_every_listener():
    broker = MemoryBroker()
    peer = Peer()
    broker.subscribe("/c", peer.conn)
    broker.close()
    assert broker.listeners("/c") == frozenset()
    assert not peer.conn.closed


def test_without_a_current_application_send_is_refused():
    with pytest.raises(IncorrectlyConfigured, match="no Pyramid application"):
        tree()[1].send("lost")


def test_broker_is_made_on_first_use_without_include():
    with testing.testConfig() as config:
        broker = get_broker()
        assert isinstance(broker, MemoryBroker)
        assert config.registry.queryUtility(IBroker) is broker


def test_public_names():
    import stargate

    assert "WebSocketView" in dir(stargate)
    assert stargate.WebSocketAwareResource is WebSocketAwareResource
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = stargate.Nope


class Container(dict):
    """A container of stargate 0.x: no ``__name__``, no ``__parent__``."""


def unnamed_tree():
    jobs = Container()
    jobs["1"] = Job("1", jobs)
    jobs["2"] = Job("2", jobs)
    return jobs["1"], jobs["2"]


def test_a_resource_without_a_path_is_its_own_channel(config):
    one, two = unnamed_tree()
    assert one.channel is one.channel  # the same, every time
    assert one.channel != two.channel
    assert "Job without a path" in repr(one.channel)
    first, other = Peer(), Peer()
    one.add_listener(first.conn)
    two.add_listener(other.conn)
    assert one.listeners == {first.conn}
    one.send("start")
    assert first.messages(0.05) == ["start"]
    assert other.messages(0.05) == []
    one.remove_listener(first.conn)
    assert one.listeners == frozenset()


@pytest.mark.green_redis
def test_the_redis_broker_says_what_a_resource_without_a_path_lacks():
    from stargate.brokers.redis import RedisBroker

    one, _ = unnamed_tree()
    broker = RedisBroker("redis://127.0.0.1:1/0")  # never connected: refused first
    try:
        for call in (
            lambda: broker.subscribe(one.channel, Peer().conn),
            lambda: broker.publish(one.channel, "start"),
        ):
            with pytest.raises(IncorrectlyConfigured) as refusal:
                call()
            message = str(refusal.value)
            assert "a Job has none" in message
            assert "'Container' object has no attribute '__name__'" in message
            assert "give every container of the resource tree __name__" in message
    finally:
        broker.close()
