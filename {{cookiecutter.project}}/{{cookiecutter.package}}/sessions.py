"""When each user's sessions were ended: what makes a logout stick.

The session is a cookie the server signs and never stores, so a copy of it
taken before a logout would stay valid.  A logout therefore records, per
user, when their sessions ended; the security policy (``security.py``)
refuses a session that started before that, and any session older than
``session.lifetime`` seconds.  A record is kept that long, no longer: after
it, every session it could refuse is too old anyway, so records never pile
up.
{%- if cookiecutter.broker == "redis" %}

With ``stargate.broker = redis://`` (or ``redis+cluster://``) the records
are kept in that Redis, shared by every process; with ``memory://``, in the
one process.
{%- endif %}
"""

import math
import time
{%- if cookiecutter.broker == "redis" %}

import redis
from stargate.cluster_url import is_cluster_url, parse_cluster_url

#: What a Redis, or a cluster none of whose nodes answers, raises.
UNREACHABLE = (redis.RedisError, redis.exceptions.RedisClusterException)
{%- endif %}

#: How long a session may live at most, in seconds, however active.
DEFAULT_LIFETIME = 12 * 3600


class SessionsUnavailable(Exception):
    """Where the records are kept cannot be reached: nothing can be said."""


class EndedSessions:
    """The users whose sessions were ended, and when, in this process."""

    def __init__(self, lifetime=DEFAULT_LIFETIME):
        self.lifetime = lifetime
        self._ended = {}  # user id -> time; oldest first

    def end(self, userid, now=None):
        """End the sessions of ``userid`` started before ``now``.

        :raises SessionsUnavailable: where the records cannot be reached.
        """
        now = time.time() if now is None else now
        self._ended.pop(userid, None)  # the newest goes last
        self._ended[userid] = now
        for user, ended in list(self._ended.items()):
            if now - ended < self.lifetime:
                break
            del self._ended[user]  # older than any live session

    def valid(self, userid, started, now=None):
        """Say whether a session of ``userid`` started at ``started`` is still valid.

        :raises SessionsUnavailable: where the records cannot be reached.
        """
        now = time.time() if now is None else now
        if now - started >= self.lifetime:
            return False
        return started > self.ended_at(userid)

    def ended_at(self, userid):
        """Return when the sessions of ``userid`` were last ended (-inf: never)."""
        return self._ended.get(userid, -math.inf)
{%- if cookiecutter.broker == "redis" %}


class RedisEndedSessions(EndedSessions):
    """The same, in Redis: every process sees a logout at once.

    ``end()`` and ``ended_at()`` (so ``valid()``) raise
    :class:`SessionsUnavailable` when Redis does not answer: a session is
    then neither let in nor ended.
    """

    def __init__(self, url, prefix, lifetime=DEFAULT_LIFETIME):
        self.lifetime = lifetime  # and no record in the process: Redis holds them
        self.url = url
        self.prefix = f"{prefix}sessions-ended:"
        self._redis = None

    def end(self, userid, now=None):
        """End the sessions of ``userid`` started before ``now``."""
        now = time.time() if now is None else now
        try:
            self._client().set(
                self.prefix + str(userid), repr(now), ex=math.ceil(self.lifetime)
            )
        except UNREACHABLE as error:
            raise SessionsUnavailable(str(error)) from error

    def ended_at(self, userid):
        """Return when the sessions of ``userid`` were last ended (-inf: never)."""
        try:
            ended = self._client().get(self.prefix + str(userid))
        except UNREACHABLE as error:
            raise SessionsUnavailable(str(error)) from error
        return -math.inf if ended is None else float(ended)

    def _client(self):
        # Made at first use: a cluster's client reads the cluster's map when
        # made, and the application must start while Redis is away.
        if self._redis is None:
            options = {"socket_timeout": 2, "socket_connect_timeout": 2}
            if is_cluster_url(self.url):
                self._redis = parse_cluster_url(self.url).client(redis, **options)
            else:
                self._redis = redis.Redis.from_url(self.url, **options)
        return self._redis
{%- endif %}


def ended_sessions(settings):
    """Return where the application keeps ended sessions, from its settings."""
    lifetime = float(settings.get("session.lifetime", DEFAULT_LIFETIME))
{%- if cookiecutter.broker == "redis" %}
    broker = settings.get("stargate.broker", "memory://")
    if broker.startswith("redis"):
        prefix = settings.get("stargate.broker_channel_prefix", "")
        return RedisEndedSessions(broker, prefix, lifetime)
{%- endif %}
    return EndedSessions(lifetime)
