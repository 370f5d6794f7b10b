"""Place a demo wave's disks in an emulator's S3 and write its manifest (``make demo``).

    .venv/bin/python manifests/demo_wave.py --endpoint-url http://127.0.0.1:PORT \\
        --vms 300 --manifest demo-output/wave.csv

Starts nothing: given the URL of a running ``ibimport emulator``, it creates one bucket
per Region (each in its own Region, as S3 requires of a disk EC2 imports there), puts
every VM's disk objects with boto3 (a VM in ten has a second, data disk: a
``diskContainers`` row) and writes a CSV manifest whose ``region`` column spreads the VMs
over the Regions. The same --vms and --seed give the same wave.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config

REGIONS = ("us-east-1", "eu-west-1")
SEED = 19
#: What a disk object holds: a few bytes stand for gigabytes (its size is not the point).
DISK_BODY = b"demo disk image\n"


def bucket_of(region: str) -> str:
    return f"ibimport-demo-disks-{region}"


def plan(vms: int, regions: tuple[str, ...], seed: int) -> list[dict[str, str]]:
    """The wave's rows: a name, a Region, and one or two disks (``s3://`` URLs)."""
    rng = random.Random(seed)
    rows = []
    for i in range(vms):
        region = regions[i % len(regions)]
        bucket = bucket_of(region)
        platform = "Windows" if rng.random() < 0.3 else "Linux"
        fmt = rng.choice(("vmdk", "vhdx", "ova")) if platform == "Linux" else "vhdx"
        boot = f"s3://{bucket}/wave/vm-{i:05d}/boot.{fmt}"
        row = {
            "name": f"vm-{i:05d}",
            "semanticVersion": "1.0.0",
            "platform": platform,
            "region": region,
            "diskImage": boot,
            "diskContainers": "",
        }
        if fmt != "ova" and rng.random() < 0.1:
            data = f"s3://{bucket}/wave/vm-{i:05d}/data.{fmt}"
            row["diskImage"] = ""
            row["diskContainers"] = json.dumps([{"Url": boot}, {"Url": data}])
        rows.append(row)
    return rows


def disk_urls(row: dict[str, str]) -> list[str]:
    if row["diskImage"]:
        return [row["diskImage"]]
    return [disk["Url"] for disk in json.loads(row["diskContainers"])]


def place(endpoint_url: str, rows: list[dict[str, str]], regions: tuple[str, ...]) -> int:
    """Create each Region's bucket and put every disk object; returns the objects put."""
    config = Config(retries={"mode": "standard", "total_max_attempts": 10})
    clients = {
        region: boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        for region in regions
    }
    for region, s3 in clients.items():
        location = {} if region == "us-east-1" else {"LocationConstraint": region}
        s3.create_bucket(Bucket=bucket_of(region), CreateBucketConfiguration=location)
    objects = [(row["region"], url) for row in rows for url in disk_urls(row)]

    def put(item: tuple[str, str]) -> None:
        region, url = item
        bucket, _, key = url.removeprefix("s3://").partition("/")
        clients[region].put_object(Bucket=bucket, Key=key, Body=DISK_BODY)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, objects))
    return len(objects)


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint-url", required=True, help="the running emulator's URL")
    parser.add_argument("--vms", type=int, default=300)
    parser.add_argument("--regions", default=",".join(REGIONS), help="comma-separated")
    parser.add_argument("--manifest", type=Path, required=True, help="the CSV to write")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    regions = tuple(r.strip() for r in args.regions.split(",") if r.strip())
    if args.vms < 1 or not regions:
        parser.error("--vms must be at least 1 and --regions name one Region at least")
    rows = plan(args.vms, regions, args.seed)
    placed = place(args.endpoint_url, rows, regions)
    write_manifest(args.manifest, rows)
    print(
        f"placed {placed} disk objects of {len(rows)} VMs in {len(regions)} Regions' buckets; "
        f"manifest {args.manifest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
