"""Who the user is, and what they may do: a session-based security policy.

The login view stores the user's name in the session (a signed cookie),
with the time the session started; every request, WebSocket upgrades
included, carries that cookie, so Pyramid checks a WebSocket view's
``permission=`` before the upgrade: a refused client gets a plain 403 and
never a socket.  A session that a logout ended (``sessions.py``), or older
than ``session.lifetime``, names nobody.
"""

import time

from pyramid.authentication import SessionAuthenticationHelper
from pyramid.security import Allowed, Denied

from .sessions import SessionsUnavailable

#: The permission of the WebSocket views only logged-in users may open.
WATCH = "watch"

#: Where the session keeps the time it started.
STARTED = "started"

_helper = SessionAuthenticationHelper()  # the user's name in the session


def session_user(request):
    """Return the user whose valid session the request carries, or None.

    Checked once per request: an ended or expired session is emptied, so
    that its cookie is replaced by one that names nobody.

    :raises SessionsUnavailable: when ``request.ended_sessions`` cannot say.
    """
    session = request.session
    userid = _helper.authenticated_userid(request)
    started = session.get(STARTED)
    checked = request.environ.get(__name__)
    if checked is not None and checked[0] == (userid, started):
        return checked[1]
    identity = None
    if userid is not None:
        if isinstance(started, float) and request.ended_sessions.valid(userid, started):
            identity = userid
        else:
            session.invalidate()
    request.environ[__name__] = ((userid, started), identity)
    return identity


class SessionSecurityPolicy:
    """Logged-in users (see ``views.login``) may ``watch``; nobody else may.

    ``request.ended_sessions`` (``sessions.py``) says which sessions ended.
    """

    def identity(self, request):
        """Return the logged-in user's name, or None."""
        try:
            return session_user(request)
        except SessionsUnavailable:
            # Nobody, for now; the session is kept for when the records are
            # back (stargate's broker logs the outage of its Redis).
            return None

    def authenticated_userid(self, request):
        """Return the logged-in user's name, or None."""
        return self.identity(request)

    def permits(self, request, context, permission):
        """Allow ``watch`` to logged-in users."""
        if permission == WATCH and self.identity(request) is not None:
            return Allowed("logged in")
        return Denied("log in first")

    def remember(self, request, userid, **kw):
        """Store ``userid`` in the session, and when the session started."""
        request.session[STARTED] = time.time()
        return _helper.remember(request, userid, **kw)

    def forget(self, request, **kw):
        """Remove the user from the session."""
        return _helper.forget(request, **kw)
