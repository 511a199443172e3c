"""The web console: a static page at `/` on `dalston gateway` (all models) and `dalston serve` (its own).

WHY static and keyless: the page is the same for everyone; the user pastes a `dk_` key into it and it
calls the same authenticated API any client uses, so serving the page needs no key and reveals nothing
that `/v1/models` would not. Plain HTML, CSS and ES modules written here: no build step and no CDN, so
it works air-gapped. See docs/CONSOLE.md.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"

# Everything the page loads comes from this origin; the key never leaves it (no referrer, no framing).
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; "
                               "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


async def _index(_: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


def console_routes() -> list[BaseRoute]:
    """`GET /` (the page) and `/console/...` (its stylesheet and modules); no key needed."""
    return [Route("/", _index, methods=["GET", "HEAD"]),
            Mount("/console", app=StaticFiles(directory=STATIC_DIR), name="console")]
