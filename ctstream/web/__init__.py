"""Status views on the worker's web port (faust's web server)."""

from ctstream.web.status import status_snapshot
from ctstream.web.views import install_views

__all__ = ["install_views", "status_snapshot"]
