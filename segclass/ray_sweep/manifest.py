"""What a named sweep is, written once to `<storage>/<name>/sweep.json` and checked on every rerun.

Rerunning a sweep resumes it: every grid point without a finished run runs,
each from its own checkpoint. What a rerun may not do silently is change what
the sweep is: another dataset or data cache, other training settings (epochs,
batch size, weights...), or more grid points. The first two are refused (they
belong under another `--name`); new grid points need `--grow`. A narrower
rerun (fewer seeds, one mode) is fine: it runs a part of the same sweep.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from segclass.errors import TrackingStoreError
from segclass.ray_sweep.storage import Storage

log = logging.getLogger(__name__)

MANIFEST = "sweep.json"
LOCK = "driver.json"
FORMAT = 1
#: A lock from another host counts as held while its heartbeat is younger than this.
LOCK_STALE_S = 120.0


def check_sweep(folder: Storage, name: str, dataset: str, data_fingerprint: str, settings: dict[str, Any],
                keys: list[str], grow: bool = False, resume: bool = False) -> dict[str, Any]:
    """Create or check the sweep's manifest; returns it as it now is (grown when asked)."""
    manifest = folder.read_json(MANIFEST)
    where = f"{folder.uri}/{MANIFEST}"
    if manifest is None:
        leftovers = [n for n in folder.list() if not n.startswith(".") and n != LOCK]
        if leftovers:
            raise TrackingStoreError(
                f"{folder.uri} holds a sweep folder from an older segclass (no {MANIFEST}; found "
                f"{', '.join(leftovers[:3])}): its checkpoints are not addressed by trial identity and cannot be "
                "resumed safely. Choose another --name or --storage, or delete that folder"
            )
        if resume:
            raise TrackingStoreError(f"--resume: there is no sweep named {name!r} in {folder.uri}; drop --resume "
                                     "to start it")
        manifest = {"format": FORMAT, "name": name, "dataset": dataset, "data_fingerprint": data_fingerprint,
                    "settings": settings, "points": sorted(keys), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        folder.write_json(MANIFEST, manifest)
        return manifest
    if manifest.get("format") != FORMAT:
        raise TrackingStoreError(f"{where} has format {manifest.get('format')}, this segclass reads {FORMAT}; "
                                 "choose another --name")
    if manifest["dataset"] != dataset or manifest["data_fingerprint"] != data_fingerprint:
        raise TrackingStoreError(
            f"sweep {name!r} ({where}) is a sweep of dataset {manifest['dataset']} with data fingerprint "
            f"{manifest['data_fingerprint'][:12]}; this run uses {dataset} with {data_fingerprint[:12]}. One sweep "
            f"never mixes datasets or data caches: choose another --name (e.g. --name {name}-{dataset})"
        )
    differing = sorted(k for k in set(settings) | set(manifest["settings"])
                       if settings.get(k) != manifest["settings"].get(k))
    if "result_version" in differing:
        raise TrackingStoreError(
            f"sweep {name!r} ({where}) was run by a segclass whose trials compute other results (result version "
            f"{manifest['settings'].get('result_version')}, now {settings.get('result_version')}); its runs cannot be "
            f"continued with this code. Start a new sweep: --name {name}-v{settings.get('result_version')}"
        )
    if differing:
        changes = ", ".join(f"{k} {manifest['settings'].get(k)!r} -> {settings.get(k)!r}" for k in differing)
        raise TrackingStoreError(
            f"sweep {name!r} ({where}) was run with other training settings ({changes}); its results would not be "
            "comparable. Rerun with the sweep's settings, or choose another --name for the new ones"
        )
    new = sorted(set(keys) - set(manifest["points"]))
    if new:
        if not grow:
            raise TrackingStoreError(
                f"this run adds {len(new)} grid point(s) to sweep {name!r} (e.g. {new[0]}); pass --grow to add "
                "them to it, or choose another --name"
            )
        manifest = {**manifest, "points": sorted(set(manifest["points"]) | set(keys)),
                    "grown": [*manifest.get("grown", []), time.strftime("%Y-%m-%d %H:%M:%S")]}
        folder.write_json(MANIFEST, manifest)
    return manifest


class DriverLock:
    """One driver per sweep at a time: two would train the same trials into the same checkpoint folders.

    `<storage>/<name>/driver.json` names the driver (a random id, its host and
    process) and a heartbeat it renews every LOCK_STALE_S / 4. It is taken by
    an exclusive create (`Storage.create_exclusive`), so of two drivers
    starting at once exactly one gets it. A lock whose process is gone (same
    host) or whose heartbeat is older than LOCK_STALE_S (another host, or a
    killed driver) is taken over with a line saying so: the stale file is
    renamed away first (only one of several drivers can rename it), then
    created anew. Only the driver named in the lock renews or removes it.
    """

    def __init__(self, folder: Storage, name: str) -> None:
        self.folder, self.name = folder, name
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "driver": uuid.uuid4().hex[:16],
                   "machine": _machine()}
        self.lost = False  # set when another driver took the lock over while this one ran
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def driver_id(self) -> str:
        return self.me["driver"]

    @property
    def uri(self) -> str:
        return f"{self.folder.uri}/{LOCK}"

    def __enter__(self) -> "DriverLock":
        for _ in range(3):  # a takeover can race another driver's: look again
            if self.folder.create_exclusive(LOCK, self._payload()):
                break
            held = self.folder.read_json(LOCK)
            if held is None:  # released (or renamed away) just now
                continue
            if lock_is_live(held, self.me):
                raise TrackingStoreError(
                    f"sweep {self.name!r} is being run by another driver (process {held.get('pid')} on "
                    f"{held.get('host')}, heartbeat {time.time() - float(held.get('heartbeat', 0)):.0f} s ago; "
                    f"{self.uri}). Wait for it to end, or stop it; a killed driver's lock expires by itself")
            stale = f"{LOCK}.stale-{self.driver_id}"
            if self.folder.rename_away(LOCK, stale):
                moved = self.folder.read_bytes(stale)
                if json.loads(moved) != held:  # another driver took it between our read and our rename: give it
                    self.folder.create_exclusive(LOCK, moved)  # back (unless yet another made a new one), look again
                    self.folder.delete(stale)
                    continue
                self.folder.delete(stale)
                print(f"sweep {self.name}: took over the lock of a driver that is gone (process {held.get('pid')} "
                      f"on {held.get('host')}, last heartbeat {time.time() - float(held.get('heartbeat', 0)):.0f} s "
                      f"ago)", flush=True)
        else:
            raise TrackingStoreError(f"sweep {self.name!r}: could not take {self.uri} (other drivers kept taking "
                                     "it); try again")
        self._thread = threading.Thread(target=self._run, name="segclass-driver-lock", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        released = f"{LOCK}.released-{self.driver_id}"
        if self._mine() and self.folder.rename_away(LOCK, released):  # what was renamed is checked, not assumed
            moved = self.folder.read_bytes(released)
            if json.loads(moved).get("driver") != self.driver_id:  # taken over in between: not ours to remove
                self.folder.create_exclusive(LOCK, moved)
            self.folder.delete(released)

    def _payload(self) -> bytes:
        return json.dumps({**self.me, "heartbeat": time.time()}, indent=1, sort_keys=True).encode()

    def _mine(self) -> bool:
        held = self.folder.read_json(LOCK)
        return held is not None and held.get("driver") == self.driver_id

    def _run(self) -> None:
        while not self._stop.wait(LOCK_STALE_S / 4):
            try:
                if self._mine():  # never renew a lock another driver took over
                    self.folder.write_bytes(LOCK, self._payload())
                elif not self.lost:
                    self.lost = True
                    log.error("sweep %s: another driver took over %s while this one ran (this driver was seen as "
                              "gone: paused, or its heartbeats failed); stop this driver: two drivers of one sweep "
                              "train into the same checkpoints", self.name, self.uri)
            except (OSError, ValueError) as exc:  # a storage hiccup must not end the heartbeats
                log.warning("sweep %s: could not renew %s (%s); trying again in %.0f s", self.name, self.uri, exc,
                            LOCK_STALE_S / 4)


def _machine() -> str:
    """This machine and process namespace (boot id and PID-namespace inode): a pid means the same process
    only where these match, so a container sharing the host's name is not judged by a pid it cannot see."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def lock_is_live(held: dict[str, Any], me: dict[str, Any] | None = None) -> bool:
    """Whether the driver a lock names is alive.

    Its heartbeat (renewed every LOCK_STALE_S / 4) must be younger than
    LOCK_STALE_S, comparing clocks of two hosts (keep them in sync, NTP); in
    the same machine and PID namespace, a driver whose process is gone is dead
    at once (a killed driver on this machine does not hold its sweep for 2 min).
    """
    fresh = time.time() - float(held.get("heartbeat", 0)) < LOCK_STALE_S
    machine = _machine()
    if held.get("host") == socket.gethostname() and machine and held.get("machine") == machine:
        if me is not None and held.get("pid") == me["pid"] and held.get("driver") != me.get("driver"):
            return False  # an earlier driver of this very process (a test, a notebook) that did not release
        try:
            os.kill(int(held["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return fresh
        except (KeyError, TypeError, ValueError):
            return False
        return fresh  # a reused pid keeps no lock alive: a live driver beats
    return fresh


def owner_state(folder: Storage, driver: str) -> str:
    """`live`, `gone` or `unknown`: what the lock in `folder` (the sweep folder a run's tag names) says of `driver`.

    `unknown` when the folder cannot be seen from here (another host's local
    path, storage without credentials): a run is never ended on a guess.
    """
    try:
        if not folder.exists(""):
            return "unknown"
        held = folder.read_json(LOCK)
    except (OSError, ValueError):
        return "unknown"
    if held is None or held.get("driver") != driver:  # released, or taken over by a later driver
        return "gone"
    return "live" if lock_is_live(held) else "gone"
