"""Status views on the worker's web port (faust's web server)."""

from ctstream.web.status import install_views, status_snapshot

__all__ = ["install_views", "status_snapshot"]
