"""{{ cookiecutter.description }}."""

import os

from pyramid.config import Configurator
from pyramid.session import SignedCookieSessionFactory

from .resources import Root
from .security import SessionSecurityPolicy

#: The environment variable that holds the secret signing the session cookie
#: (production.ini has none: a secret in a committed file is no secret).
SECRET_VARIABLE = "{{ cookiecutter.package | upper }}_SESSION_SECRET"

#: The shortest secret accepted, in characters.
MIN_SECRET_LENGTH = 32


def session_secret(settings, environ=os.environ):
    """Return the session secret: from the environment, else from the settings.

    :raises ValueError: saying what to do, when it is missing or too short.
    """
    secret = environ.get(SECRET_VARIABLE) or settings.get("session.secret") or ""
    if len(secret) < MIN_SECRET_LENGTH:
        problem = "is too short" if secret else "is missing"
        raise ValueError(
            f"the session secret {problem}: set the environment variable "
            f"{SECRET_VARIABLE} to {MIN_SECRET_LENGTH} characters or more, such as "
            "what this prints: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    return secret


def main(global_config, **settings):
    """Return the Pyramid WSGI application (``use = egg:{{ cookiecutter.project }}``)."""
    secret = session_secret(settings)
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
        config.set_session_factory(
            SignedCookieSessionFactory(secret, httponly=True, samesite="Lax")
        )
        config.set_security_policy(SessionSecurityPolicy())
        # Every POST, PUT, PATCH and DELETE needs the session's CSRF token (the
        # page sends it as X-CSRF-Token).  WebSocket upgrades are GETs: the
        # origin check protects them instead (stargate.allowed_origins).
        config.set_default_csrf_options(require_csrf=True)
        config.add_static_view("static", "static", cache_max_age=3600)
        config.scan()
    return config.make_wsgi_app()
