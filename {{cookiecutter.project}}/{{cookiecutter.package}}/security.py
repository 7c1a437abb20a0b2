"""Who the user is, and what they may do: a session-based security policy.

The login view stores the user's name in the session (a signed cookie);
every request, WebSocket upgrades included, carries that cookie, so Pyramid
checks a WebSocket view's ``permission=`` before the upgrade: a refused
client gets a plain 403 and never a socket.
"""

from pyramid.authentication import SessionAuthenticationHelper
from pyramid.security import Allowed, Denied

#: The permission of the WebSocket views only logged-in users may open.
WATCH = "watch"


class SessionSecurityPolicy:
    """Logged-in users (see ``views.login``) may ``watch``; nobody else may."""

    def __init__(self):
        self.helper = SessionAuthenticationHelper()

    def identity(self, request):
        """Return the logged-in user's name, or None."""
        return self.helper.authenticated_userid(request)

    def authenticated_userid(self, request):
        """Return the logged-in user's name, or None."""
        return self.identity(request)

    def permits(self, request, context, permission):
        """Allow ``watch`` to logged-in users."""
        if permission == WATCH and self.identity(request) is not None:
            return Allowed("logged in")
        return Denied("log in first")

    def remember(self, request, userid, **kw):
        """Store ``userid`` in the session."""
        return self.helper.remember(request, userid, **kw)

    def forget(self, request, **kw):
        """Remove the user from the session."""
        return self.helper.forget(request, **kw)
