"""The driver lock on object storage: the store's own conditional write decides who holds it.

An S3 endpoint runs here as `moto_server` on 127.0.0.1 (the S3 API, including
`If-None-Match: *` conditional writes); pyarrow and boto3 reach it through
the same AWS_* variables a user sets for their own store.
"""

import os
import sys
from pathlib import Path

import pytest

from segclass.ray_sweep.storage import Storage
from tests.lock_race import drivers_at_once

pytest.importorskip("boto3")
MOTO = Path(sys.executable).with_name("moto_server")


@pytest.fixture
def s3_endpoint(tmp_path, monkeypatch):
    """A local S3 endpoint with a bucket `sweeps`; its settings in this process's environment."""
    if not MOTO.exists():
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    from tests.test_cluster import _free_port, _start_in_session, kill_session

    port = _free_port()
    session = _start_in_session([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], tmp_path / "moto.log",
                                "Running on", dict(os.environ))
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    import boto3

    boto3.client("s3").create_bucket(Bucket="sweeps")
    try:
        yield "s3://sweeps/lab"
    finally:
        kill_session(session)


def test_an_s3_object_is_created_exclusively_by_the_stores_conditional_write(s3_endpoint, monkeypatch):
    storage = Storage(s3_endpoint).child("sweep")
    assert storage.create_exclusive("driver.json", b"first")
    # the race a read-then-write loses: the second writer looked before the first one wrote
    with monkeypatch.context() as looked_too_early:
        looked_too_early.setattr(Storage, "exists", lambda self, name: False)
        assert not storage.create_exclusive("driver.json", b"second")
    assert storage.read_bytes("driver.json") == b"first"  # the refused write changed nothing


def test_driver_lock_on_s3_is_taken_by_exactly_one_of_drivers_starting_at_once(s3_endpoint):
    outcomes = drivers_at_once(s3_endpoint, 4, lead_s=6)
    assert sorted(out.strip() for out, _ in outcomes) == ["refused"] * 3 + ["took"], outcomes
    assert not any("no conditional write" in err for _, err in outcomes)  # the store decided, not a read-back
    assert not Storage(s3_endpoint).child("sweep").exists("driver.json")  # released by its owner
