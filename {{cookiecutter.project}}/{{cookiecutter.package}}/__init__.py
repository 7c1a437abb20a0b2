"""{{ cookiecutter.description }}."""

import math
import os
from collections import Counter

from pyramid.config import Configurator
from pyramid.session import SignedCookieSessionFactory
from pyramid.settings import asbool
from stargate import IncorrectlyConfigured

from .resources import Root
from .security import SessionSecurityPolicy
from .sessions import ended_sessions

#: The environment variable that holds the secret signing the session cookie
#: (production.ini has none: a secret in a committed file is no secret).
SECRET_VARIABLE = "{{ cookiecutter.package | upper }}_SESSION_SECRET"

#: The shortest secret accepted, in characters.
MIN_SECRET_LENGTH = 32

#: The least entropy accepted, in bits, as the frequencies of the secret's
#: characters suggest it: 0 for one letter repeated, 64 for "abcd" * 8,
#: about 118 (never under 80) for 32 random hex digits.
MIN_SECRET_BITS = 80

#: How the development ini files' secrets begin, and the only files that
#: may hold one.
DEVELOPMENT_SECRET = "dev-only-"
DEVELOPMENT_FILES = ("development.ini", "testing.ini")

MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"

#: The environment variable that overrides ``stargate.broker`` (a Redis
#: password does not belong in a committed file either).
BROKER_VARIABLE = "{{ cookiecutter.package | upper }}_BROKER_URL"


def secret_bits(secret):
    """Return the entropy of ``secret`` in bits, estimated from its characters."""
    size = len(secret)
    counts = Counter(secret).values()
    return -sum(count * math.log2(count / size) for count in counts)


def session_secret(settings, environ=os.environ, ini_file=None):
    """Return the session secret: from the environment, else from the settings.

    :param ini_file: the ini file the application is served from, if known:
        a development secret is accepted from the development files only.
    :raises IncorrectlyConfigured: saying what to do, when it is missing, too short, too
        weak, or a development secret outside development.
    """
    secret = environ.get(SECRET_VARIABLE) or settings.get("session.secret") or ""
    if len(secret) < MIN_SECRET_LENGTH:
        problem = "is too short" if secret else "is missing"
        raise IncorrectlyConfigured(
            f"the session secret {problem}: set the environment variable "
            f"{SECRET_VARIABLE} to {MIN_SECRET_LENGTH} characters or more, such as "
            f"what this prints: {MAKE_ONE}"
        )
    served_from = os.path.basename(ini_file) if ini_file else None
    if secret.startswith(DEVELOPMENT_SECRET) and served_from not in (
        None,
        *DEVELOPMENT_FILES,
    ):
        raise IncorrectlyConfigured(
            f"the session secret is the development one, and {served_from} is "
            f"not a development file: set the environment variable "
            f"{SECRET_VARIABLE} to a secret of its own, such as what this "
            f"prints: {MAKE_ONE}"
        )
    repeats = secret in (secret + secret)[1:-1]  # "0123456789" * 4, say
    if repeats or secret_bits(secret) < MIN_SECRET_BITS:
        raise IncorrectlyConfigured(
            "the session secret is too easy to guess (few different "
            f"characters, or a pattern repeated): set {SECRET_VARIABLE} to a "
            f"random one, such as what this prints: {MAKE_ONE}"
        )
    return secret


def main(global_config, **settings):
    """Return the Pyramid WSGI application (``use = egg:{{ cookiecutter.project }}``)."""
    secret = session_secret(settings, ini_file=global_config.get("__file__"))
    if os.environ.get(BROKER_VARIABLE):
        settings["stargate.broker"] = os.environ[BROKER_VARIABLE]
{%- if cookiecutter.backend == "sqlalchemy" %}
    # A resource tree per request, reading the request's database session.
    with Configurator(settings=settings, root_factory=Root) as config:
        config.include(".models")  # request.dbsession, pyramid_tm, migrations
{%- else %}
    root = Root()  # the resource tree lives as long as the application
    with Configurator(settings=settings, root_factory=lambda request: root) as config:
{%- endif %}
        config.include("pyramid_exclog")  # every error in the log, at ERROR
        config.include("pyramid_jinja2")
        config.include("stargate")  # the websocket= predicate and the broker
        # One WebSocket for the whole page: it subscribes to each resource
        # by path, served by that resource's own WebSocket view.
        config.add_websocket_multiplexer("/socket")
        # /healthz and /readyz, for a load balancer: readiness turns to 503
        # while a stopping server drains (drain_delay) or Redis is away.
        config.add_health_checks()
        config.set_session_factory(
            SignedCookieSessionFactory(
                secret,
                httponly=True,  # out of reach of the page's scripts
                samesite="Lax",  # not sent with other sites' POSTs
                secure=asbool(settings.get("session.secure", False)),  # TLS only
            )
        )
        # A logout ends the user's sessions on the server, not only the cookie.
        ended = ended_sessions(settings)
        config.add_request_method(lambda request: ended, "ended_sessions", reify=True)
        config.set_security_policy(SessionSecurityPolicy())
        # Every POST, PUT, PATCH and DELETE needs the session's CSRF token (the
        # page sends it as X-CSRF-Token).  WebSocket upgrades are GETs: the
        # origin check protects them instead (stargate.allowed_origins).
        config.set_default_csrf_options(require_csrf=True)
        config.add_static_view("static", "static", cache_max_age=3600)
        config.scan()
    return config.make_wsgi_app()
