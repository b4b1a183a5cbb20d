"""Drivers that try to take one sweep's lock at the same moment, each in its own process (a real race)."""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_DRIVER = (
    "import sys, time\n"
    "from segclass.ray_sweep.storage import Storage\n"
    "from segclass.ray_sweep.manifest import DriverLock\n"
    "from segclass.errors import TrackingStoreError\n"
    "time.sleep(float(sys.argv[2]) - time.time())\n"  # all start at the same moment
    "try:\n"
    "    with DriverLock(Storage(sys.argv[1]).child('sweep'), 'sweep'):\n"
    "        print('took', flush=True); time.sleep(3)\n"
    "except TrackingStoreError:\n"
    "    print('refused', flush=True)\n")


def drivers_at_once(storage: str, count: int, lead_s: float = 4.0) -> list[tuple[str, str]]:
    """(stdout, stderr) of `count` drivers started `lead_s` from now, together, on the sweep `storage`/sweep."""
    start = time.time() + lead_s
    drivers = [subprocess.Popen([sys.executable, "-c", _DRIVER, storage, str(start)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(count)]
    return [d.communicate(timeout=120) for d in drivers]
