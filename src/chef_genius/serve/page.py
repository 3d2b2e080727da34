"""The web page's files, served from the package (no network): index.html, app.js, style.css."""

from __future__ import annotations

import html
from importlib import resources

from chef_genius.serve.schemas import ApiError

ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
          "icon.svg": "image/svg+xml"}


def _read(name: str) -> bytes:
    return resources.files("chef_genius.serve").joinpath("page", name).read_bytes()


def index_html(presets: dict, default: str) -> str:
    """The page, with the decoding presets as the choice's options (the default selected)."""
    options = "\n".join(
        f'<option value="{html.escape(name)}"{" selected" if name == default else ""}>{html.escape(name)}</option>'
        for name in presets)
    return _read("index.html").decode("utf-8").replace("<!--DECODING-->", options)


def asset(name: str) -> tuple[bytes, str]:
    """A page file by name (only the listed ones: no path reaches anything else)."""
    if name not in ASSETS:
        raise ApiError(404, f"no such file: {name}", "not_found_error")
    return _read(name), ASSETS[name]
