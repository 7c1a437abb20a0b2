"""Pyramid's thread-local manager, kept per green thread in a context variable."""

from __future__ import annotations

import threading

import pytest
from pyramid.threadlocal import ThreadLocalManager

from stargate import threadlocals
from stargate.threadlocals import (
    ContextVarManager,
    current_registry,
    use_context_variable,
)
from tests.peers import Thread, sleep

DEFAULT = {"request": None, "registry": "global"}


@pytest.fixture
def manager():
    """A manager of its own, like Pyramid's (which the server converts)."""
    manager = ThreadLocalManager(default=lambda: DEFAULT)
    manager.push({"request": "start-up", "registry": "app"})
    use_context_variable(manager)
    return manager


def test_the_stack_of_the_calling_thread_is_carried_over(manager):
    assert isinstance(manager, ContextVarManager)
    assert manager.get() == {"request": "start-up", "registry": "app"}
    assert manager.stack == [{"request": "start-up", "registry": "app"}]


def test_converting_again_changes_nothing(manager):
    converted = type(manager)
    manager.push({"request": "more", "registry": "app"})
    use_context_variable(manager)
    assert type(manager) is converted
    assert manager.get()["request"] == "more"


def test_push_pop_get_clear(manager):
    manager.set({"request": "r", "registry": "app"})  # Pyramid's old name
    assert manager.get()["request"] == "r"
    assert manager.pop()["request"] == "r"
    manager.clear()
    assert manager.get() is DEFAULT
    assert manager.pop() is None
    assert manager.stack == []


def test_each_green_thread_has_its_own_stack(manager):
    seen = {}

    def request(name):
        seen[name, "before"] = manager.get()["request"]
        manager.push({"request": name, "registry": "app"})
        sleep(0.01)  # the others push meanwhile
        seen[name] = manager.get()["request"]
        manager.pop()

    threads = [Thread(request, name) for name in "abc"]
    for thread in threads:
        thread.wait()
    assert seen == {
        **{(name, "before"): None for name in "abc"},
        **{name: name for name in "abc"},
    }
    assert manager.get()["request"] == "start-up"


def test_each_os_thread_has_its_own_stack(manager):
    seen = []
    thread = threading.Thread(target=lambda: seen.append(manager.get()))
    thread.start()
    thread.join(10)
    assert seen == [DEFAULT]


def test_two_managers_do_not_share_a_stack(manager):
    other = ThreadLocalManager(default=lambda: DEFAULT)
    use_context_variable(other)
    other.push({"request": "other", "registry": "app"})
    assert manager.get()["request"] == "start-up"
    assert other.get()["request"] == "other"


@pytest.mark.parametrize("converted", [False, True], ids=["pyramid's", "converted"])
def test_current_registry_is_what_pyramid_says_is_current(monkeypatch, converted):
    manager = ThreadLocalManager(default=lambda: DEFAULT)
    if converted:
        use_context_variable(manager)
    monkeypatch.setattr(threadlocals, "manager", manager)
    assert current_registry() == "global"
    manager.push({"request": "r", "registry": "app"})
    manager.push({"request": "r2", "registry": "other app"})
    assert current_registry() == "other app"
    # Another green thread: its own stack, or, unpatched, the OS thread's.
    mine, pyramids = Thread(lambda: (current_registry(), manager.get())).wait()
    assert mine == pyramids["registry"] == ("global" if converted else "other app")
    manager.pop()
    assert current_registry() == "app"
