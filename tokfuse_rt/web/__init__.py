"""The web page of ``tokfuse serve`` (``GET /``): one self-contained HTML file (``index.html``, its
script and style inline, no external asset) that uses only the service's public endpoints, and the
bundled sample pair it offers (``GET /samples/<pair>/<ir|vis>.png``).

Only the standard library is imported here; the service reads the page once per replica.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

#: Sample pairs the page offers: name -> {"ir": asset file, "vis": asset file} (tokfuse_rt/assets).
SAMPLES = {"bundled": {"ir": "sample_ir.png", "vis": "sample_vis.png"}}

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.S)


def page(auth: bool = False) -> bytes:
    """The page's bytes (UTF-8 HTML); ``auth``: the service asks for a bearer token (the page then asks
    for it before it calls GET /info)."""
    html = resources.files(__name__).joinpath("index.html").read_bytes()
    marker = b'<body data-auth="off">'
    if html.count(marker) != 1:
        raise RuntimeError('tokfuse_rt/web/index.html: expected one <body data-auth="off">')
    return html.replace(marker, b'<body data-auth="on">') if auth else html


def content_security_policy(html: bytes) -> str:
    """A Content-Security-Policy for ``html`` that admits only its own inline scripts and styles (by
    SHA-256), requests to the service itself, and images from the service, blob: and data: URLs."""
    digests = {b"script": [], b"style": []}
    for kind, body in _INLINE.findall(html):
        digests[kind].append("'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'")
    script = " ".join(digests[b"script"]) or "'none'"
    style = " ".join(digests[b"style"]) or "'none'"
    return (
        f"default-src 'none'; script-src {script}; style-src {style}; img-src 'self' blob: data:; "
        "connect-src 'self' blob:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def sample(pair: str, side: str) -> bytes | None:
    """The bytes of one image of a sample pair (``side`` "ir" or "vis"), or None if there is no such."""
    name = SAMPLES.get(pair, {}).get(side)
    if name is None:
        return None
    return resources.files("tokfuse_rt").joinpath("assets").joinpath(name).read_bytes()
