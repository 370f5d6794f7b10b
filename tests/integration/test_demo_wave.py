"""``manifests/demo_wave.py`` (``make demo``'s wave): a real tool against a running
emulator: each Region's bucket in its Region, every disk object put, a manifest that
validates and names only objects that exist."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import boto3
from integration_support import invoke

from ibimport.emulator import EmulatorServer
from ibimport.manifest import read_manifest

SCRIPT = Path(__file__).resolve().parents[2] / "manifests" / "demo_wave.py"


def test_the_demo_wave_places_its_disks_and_writes_a_valid_manifest(
    start_emulator: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    server = start_emulator()
    manifest = tmp_path / "wave.csv"
    placed = subprocess.run(
        [sys.executable, str(SCRIPT), "--endpoint-url", server.url, "--vms", "40",
         "--manifest", str(manifest)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert placed.returncode == 0, placed.stderr
    assert invoke("validate", manifest).exit_code == 0
    rows = [r.task for r in read_manifest(manifest) if r.task is not None]
    assert len(rows) == 40
    assert {r.region for r in rows} == {"us-east-1", "eu-west-1"}
    assert any(len(r.disks()) == 2 for r in rows)  # some VMs have a data disk
    for region in ("us-east-1", "eu-west-1"):
        s3 = boto3.client("s3", endpoint_url=server.url, region_name=region)
        bucket = f"ibimport-demo-disks-{region}"
        location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
        assert (location or "us-east-1") == region  # S3 answers us-east-1 as empty
        for row in (r for r in rows if r.region == region):
            for disk in row.disks():
                assert disk.bucket == bucket
                s3.head_object(Bucket=bucket, Key=disk.key)
    assert f"{sum(len(r.disks()) for r in rows)} disk objects of 40 VMs" in placed.stdout
