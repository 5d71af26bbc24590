"""A worker keeps the DataFrame libraries out (google-cloud-bigquery would import them)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from ctstream.commands.worker import skip_dataframe_libraries as _skip_dataframe_libraries
_skip_dataframe_libraries()
import ctstream.worker
from ctstream.bigquery import storage_write
from google.cloud import bigquery, bigquery_storage_v1
loaded = [m for m in ("pyarrow", "numpy", "pandas") if sys.modules.get(m) is not None]
print(",".join(loaded))
"""


def test_a_worker_process_loads_no_pyarrow_or_numpy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == ""


def test_without_the_skip_the_bigquery_client_does_load_them() -> None:
    """The probe above means something only if the clients would import them here."""
    probe = PROBE.replace("_skip_dataframe_libraries()\n", "")
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert "pyarrow" in done.stdout


LOOP_PROBE = """
import asyncio, threading
from ctstream.worker import uvloop_everywhere
loops = [type(uvloop_everywhere()).__module__]
def in_thread():  # as a library's thread makes its loop (faust's consumer did before patch 15)
    loops.append(type(asyncio.new_event_loop()).__module__)
thread = threading.Thread(target=in_thread)
thread.start()
thread.join()
print(",".join(loops))
"""


def test_every_loop_of_a_worker_is_uvloop_also_one_made_in_a_thread() -> None:
    # In a process of its own: the loop policy is global.
    done = subprocess.run(
        [sys.executable, "-c", LOOP_PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "uvloop,uvloop"


GC_PROBE = """
import gc
from ctstream.worker import GC_YOUNG_THRESHOLD, calm_gc
calm_gc()
print(gc.get_threshold()[0] == GC_YOUNG_THRESHOLD, gc.get_freeze_count() > 1000)
"""


def test_a_worker_collects_garbage_rarely_and_skips_what_start_up_built() -> None:
    # In a process of its own: the collector's settings are global.
    done = subprocess.run(
        [sys.executable, "-c", GC_PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["True", "True"]
