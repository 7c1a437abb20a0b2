"""The security headers of every response.

The page loads scripts and styles from this site only, and none inline (the
Content-Security-Policy forbids it: an injected ``<script>`` does not run);
no other site may frame it (clickjacking); browsers take the declared
content types as they are, and send no full URL of ours to other sites.
"""

from pyramid.events import NewResponse, subscriber

#: The headers added to every response that does not set them itself.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self'; connect-src 'self'; object-src 'none'; "
        "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@subscriber(NewResponse)
def add_security_headers(event):
    """Add :data:`HEADERS` to the response, keeping any a view set itself."""
    headers = event.response.headers
    for name, value in HEADERS.items():
        headers.setdefault(name, value)
