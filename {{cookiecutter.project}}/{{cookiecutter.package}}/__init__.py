"""{{ cookiecutter.description }}."""

from pyramid.config import Configurator
from pyramid.session import SignedCookieSessionFactory

from .resources import Root
from .security import SessionSecurityPolicy


def main(global_config, **settings):
    """Return the Pyramid WSGI application (``use = egg:{{ cookiecutter.project }}``)."""
    secret = settings.get("session.secret")
    if not secret:
        raise ValueError("set session.secret in [app:main]: it signs the session")
    root = Root()  # the resource tree lives as long as the application
    with Configurator(settings=settings, root_factory=lambda request: root) as config:
        config.include("pyramid_jinja2")
        config.include("stargate")  # the websocket= predicate and the broker
        config.set_session_factory(
            SignedCookieSessionFactory(secret, httponly=True, samesite="Lax")
        )
        config.set_security_policy(SessionSecurityPolicy())
        config.add_static_view("static", "static", cache_max_age=3600)
        config.scan()
    return config.make_wsgi_app()
