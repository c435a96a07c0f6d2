"""The example's views and URLs: a hit counter and a page cached whole by ``cache_page``."""

from __future__ import annotations

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.cache import cache_page


def hits(request: HttpRequest) -> HttpResponse:
    """Count the requests in the cache: one counter for every process of the cluster."""
    cache.add("hits", 0, timeout=None)  # only if missing: the first request of the cluster
    return HttpResponse(f"hits: {cache.incr('hits')}", content_type="text/plain")


@cache_page(30)  # type: ignore[untyped-decorator]  # Django is untyped
def report(request: HttpRequest) -> HttpResponse:
    """An expensive page: rendered once, then served from the cache for 30 s."""
    cache.add("renders", 0, timeout=None)
    renders = cache.incr("renders")
    return HttpResponse(f"report rendered {renders} time(s)", content_type="text/plain")


urlpatterns = [path("", hits), path("report", report)]
