{%- if cookiecutter.runtime == "gevent" -%}
"""The tests run on gevent, patched the way the server patches its process.

Imported before the tests and their fixtures, so that the live server's
Redis client and any blocking call in a view are green here too.
"""

from stargate import runtime

runtime.use("gevent").monkey_patch()
{%- else -%}
"""The tests run on eventlet, the server's runtime.

Chosen before the tests and their fixtures make an application, so that
its Redis client is eventlet's whichever test runs first.
"""

from stargate import runtime

runtime.use("eventlet")
{%- endif %}
