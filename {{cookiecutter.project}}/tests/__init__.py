{%- if cookiecutter.runtime == "gevent" -%}
"""The tests run on gevent, patched the way the server patches its process.

Imported before the tests and their fixtures, so that the live server's
Redis client and any blocking call in a view are green here too.
"""

from stargate import runtime

runtime.use("gevent").monkey_patch()
{%- endif %}
