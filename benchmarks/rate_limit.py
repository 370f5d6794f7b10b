"""Issue 3's "Done when": how close ``ibimport run`` holds a service quota, and exactly-once.

Against an emulator with ``--rate 40 --burst 10`` (a child process pinned to core 0):

- told the quota (``ibimport run --rate 40``): sustain >= 97% of it, <= 1% throttled calls;
- not told (adaptive): sustain >= 90% of it, <= 3% throttled calls.

And against ``--fault-rate 0.05 --rate 300``: a 600-row CSV, then the same tasks as JSON
Lines in another order (fresh journal), each import exactly once with identical tokens.

``ibimport run`` runs as a subprocess (the console script, pinned to core 1), exactly as a
user runs it; the figures come from its JSON report (sustained = rows imported / elapsed,
throttled share = throttled calls / calls) and from the emulator's own counters and
ListImages + ListImageBuildVersions.

    .venv/bin/python benchmarks/rate_limit.py [--seconds 60] [--only told,adaptive,faults]
        [--readme]   # also rewrite the "Rate limiting" section of benchmarks/README.md
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from ibimport.emulator import EmulatorConfig, EmulatorProcess

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
SECTION = "## Rate limiting"
QUOTA, BURST = 40.0, 10
TARGETS = {"told": (0.97, 0.01), "adaptive": (0.90, 0.03)}
ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDIBIMPORTBENCH",
    "AWS_SECRET_ACCESS_KEY": "ibimport-bench-secret",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def tasks(n: int, *, seed: int = 3) -> list[dict[str, Any]]:
    """``n`` varied valid tasks, unique by name and version."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        platform_ = rng.choice(["Linux", "Windows"])
        task: dict[str, Any] = {
            "name": f"bench-vm-{i:05d}",
            "semanticVersion": f"{rng.randint(1, 3)}.{rng.randint(0, 12)}.{rng.randint(0, 40)}",
            "platform": platform_,
            "vmImportTaskId": f"import-ami-0{rng.getrandbits(64):016x}",
            "tags": {"Wave": str(1 + i // 100), "Env": rng.choice(["prod", "dev"])},
        }
        if rng.random() < 0.7:
            task["osVersion"] = "Ubuntu 22.04" if platform_ == "Linux" else "Windows Server 2022"
        if rng.random() < 0.3:
            task["description"] = f"Lift-and-shift of VM {i}"
        out.append(task)
    return out


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    fields = ["name", "semanticVersion", "description", "platform", "osVersion", "vmImportTaskId"]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*fields, "tags"])
        for task in rows:
            writer.writerow([*(task.get(f, "") for f in fields), json.dumps(task["tags"])])
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]], *, seed: int) -> Path:
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    path.write_text("".join(json.dumps(t) + "\n" for t in shuffled), encoding="utf-8")
    return path


def ibimport_command() -> list[str]:
    script = Path(sys.executable).parent / "ibimport"
    base = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "import ibimport.cli as c; c.main()"]
    )
    return (["taskset", "-c", "1"] if _can_pin() else []) + base


def _can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


@dataclass
class Run:
    label: str
    command: list[str]
    report: dict[str, Any]
    exit_code: int
    wall_s: float
    results: Path

    @property
    def imported(self) -> int:
        totals = self.report["totals"]
        return int(totals["succeeded"] + totals["exists"])

    @property
    def sustained(self) -> float:
        return self.imported / self.report["elapsed_s"]

    @property
    def throttled_share(self) -> float:
        return self.report["throttled"] / max(1, self.report["calls"])


def run_ibimport(label: str, manifest: Path, url: str, *extra: str) -> Run:
    report = manifest.with_suffix(".report.json")
    results = manifest.with_suffix(".results.csv")
    command = [
        *ibimport_command(),
        "run", str(manifest),
        "--endpoint-url", url,
        "--region", "us-east-1",
        "--progress", "off",
        "--report", str(report),
        "--results", str(results),
        *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(
        command, env=os.environ | ENV, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout, done.stderr, sep="\n", file=sys.stderr)
    return Run(
        label,
        command,
        json.loads(report.read_text(encoding="utf-8")),
        done.returncode,
        wall,
        results,
    )


def rate_scenario(label: str, workdir: Path, *, seconds: float) -> tuple[Run, dict[str, Any]]:
    rows = int(QUOTA * seconds)
    manifest = write_csv(workdir / f"{label}.csv", tasks(rows, seed=40 if label == "told" else 41))
    extra = ["--rate", f"{QUOTA:g}"] if label == "told" else []
    config = EmulatorConfig(rate=QUOTA, burst=BURST)
    with EmulatorProcess(config, cpus="0" if _can_pin() else None) as emulator:
        run = run_ibimport(label, manifest, emulator.url, *extra)
        stats = emulator.stats()
    return run, stats


def _builds(url: str) -> dict[tuple[str, str], list[str]]:
    client = boto3.client(
        "imagebuilder",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"total_max_attempts": 1}),
    )

    def call(method: Any, **kwargs: Any) -> dict[str, Any]:
        for _ in range(100):
            try:
                result: dict[str, Any] = method(**kwargs)
                return result
            except ClientError as error:
                if error.response["ResponseMetadata"]["HTTPStatusCode"] not in (429, 500, 503):
                    raise
                time.sleep(0.05)
        raise RuntimeError("the emulator kept failing a read")

    found: dict[tuple[str, str], list[str]] = {}
    kwargs: dict[str, Any] = {"owner": "Self"}
    while True:
        page = call(client.list_images, **kwargs)
        for version in page.get("imageVersionList", []):
            arns = found.setdefault((version["name"], version["version"]), [])
            inner: dict[str, Any] = {"imageVersionArn": version["arn"]}
            while True:
                builds = call(client.list_image_build_versions, **inner)
                arns.extend(s["arn"] for s in builds.get("imageSummaryList", []))
                if not builds.get("nextToken"):
                    break
                inner["nextToken"] = builds["nextToken"]
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    return found


def _tokens(results: Path) -> dict[tuple[str, str], tuple[str, str, str]]:
    with open(results, encoding="utf-8", newline="") as handle:
        return {
            (r["name"], r["semanticVersion"]): (r["clientToken"], r["imageArn"], r["status"])
            for r in csv.DictReader(handle)
        }


def faults_scenario(workdir: Path, *, rows: int = 600) -> dict[str, Any]:
    """600 rows as CSV, then as shuffled JSONL, against faults and a 300/s quota."""
    batch = tasks(rows, seed=600)
    csv_manifest = write_csv(workdir / "faults.csv", batch)
    jsonl_manifest = write_jsonl(workdir / "faults-again.jsonl", batch, seed=601)
    config = EmulatorConfig(fault_rate=0.05, rate=300.0, seed=600)
    with EmulatorProcess(config, cpus="0" if _can_pin() else None) as emulator:
        first = run_ibimport("faults csv", csv_manifest, emulator.url)
        after_first = emulator.stats()
        second = run_ibimport("faults jsonl", jsonl_manifest, emulator.url)
        after_second = emulator.stats()
        held = _builds(emulator.url)
    csv_rows, jsonl_rows = _tokens(first.results), _tokens(second.results)
    expected = {(t["name"], t["semanticVersion"]) for t in batch}
    return {
        "runs": [first, second],
        "after_first": after_first,
        "after_second": after_second,
        "exactly_once": set(held) == expected and all(len(a) == 1 for a in held.values()),
        "max_builds": max((len(a) for a in held.values()), default=0),
        "same_tokens": csv_rows.keys() == jsonl_rows.keys()
        and all(csv_rows[k][0] == jsonl_rows[k][0] for k in csv_rows),
        "same_arns": all(csv_rows[k][1] == jsonl_rows.get(k, ("", ""))[1] for k in csv_rows),
        "all_done": all(v[2] == "succeeded" for v in (*csv_rows.values(), *jsonl_rows.values())),
        "new_images_second_run": after_second["images"] - after_first["images"],
    }


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores (`nproc`), {model}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="Rows = 40/s x seconds.")
    parser.add_argument("--only", default="told,adaptive,faults")
    parser.add_argument("--readme", action="store_true", help="Rewrite the README section.")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    lines: list[str] = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="ibimport-bench-") as tmp:
        workdir = Path(tmp)
        header = (
            "| scenario | rows | elapsed s | sustained calls/s | share of quota | calls | "
            "throttled | throttled share | target | met |"
        )
        lines += [header, "|---|---|---|---|---|---|---|---|---|---|"]
        for label in ("told", "adaptive"):
            if label not in wanted:
                continue
            run, stats = rate_scenario(label, workdir, seconds=args.seconds)
            share = run.sustained / QUOTA
            min_share, max_throttled = TARGETS[label]
            met = (
                run.exit_code == 0
                and share >= min_share
                and run.throttled_share <= max_throttled
                and stats["duplicateBuilds"] == 0
            )
            ok &= met
            name = "told `--rate 40`" if label == "told" else "adaptive (no `--rate`)"
            lines.append(
                f"| {name} | {run.report['totals']['rows']} | {run.report['elapsed_s']:.1f} | "
                f"{run.sustained:.2f} | {share:.1%} | {run.report['calls']} | "
                f"{run.report['throttled']} | {run.throttled_share:.2%} | "
                f">= {min_share:.0%}, <= {max_throttled:.0%} | {'yes' if met else 'NO'} |"
            )
            print(lines[-1], flush=True)
            print(f"  emulator: {stats}", flush=True)
        if "faults" in wanted:
            found = faults_scenario(workdir)
            first, second = found["runs"]
            met = (
                found["exactly_once"]
                and found["same_tokens"]
                and found["same_arns"]
                and found["all_done"]
                and found["new_images_second_run"] == 0
                and found["after_second"]["duplicateBuilds"] == 0
                and first.exit_code == second.exit_code == 0
            )
            ok &= met
            lines += [
                "",
                "| `--fault-rate 0.05 --rate 300`, 600 rows | calls | retries | throttled | "
                "elapsed s | exit |",
                "|---|---|---|---|---|---|",
            ]
            for run in (first, second):
                r = run.report
                lines.append(
                    f"| {run.label} | {r['calls']} | {r['retries']} | {r['throttled']} | "
                    f"{r['elapsed_s']:.1f} | {run.exit_code} |"
                )
            lines.append("")
            lines.append(
                f"Exactly once (one build per name+version, ListImageBuildVersions): "
                f"{'yes' if found['exactly_once'] else 'NO'}; identical tokens CSV vs JSONL: "
                f"{'yes' if found['same_tokens'] else 'NO'}; same image ARNs: "
                f"{'yes' if found['same_arns'] else 'NO'}; images created by the second run: "
                f"{found['new_images_second_run']}; emulator after both: "
                f"images {found['after_second']['images']}, duplicateBuilds "
                f"{found['after_second']['duplicateBuilds']}, idempotentReplays "
                f"{found['after_second']['idempotentReplays']}, faults "
                f"{found['after_second']['faults']} (dropped {found['after_second']['dropped']})."
            )
            print("\n".join(lines[-(len((first, second)) + 5) :]), flush=True)
    print("\n".join(lines))
    print("all targets met" if ok else "TARGETS NOT MET")
    if args.readme:
        write_readme(lines, args)
    return 0 if ok else 1


def write_readme(lines: list[str], args: argparse.Namespace) -> None:
    command = "`" + " ".join([".venv/bin/python benchmarks/rate_limit.py", *sys.argv[1:]]) + "`"
    section = "\n".join(
        [
            SECTION,
            "",
            "Issue 3's Done-when. The emulator (`--rate 40 --burst 10`) runs as a child process",
            "pinned to core 0; `ibimport run` runs as a subprocess (the console script, pinned to",
            f"core 1) on a manifest of {int(QUOTA * args.seconds)} rows (about "
            f"{args.seconds:g} s at 40/s). Sustained = rows imported / elapsed (from the report);",
            "throttled share = throttled calls / calls. The faults scenario imports a 600-row CSV",
            "and then the same tasks as JSON Lines in another order (fresh journal) against",
            "`--fault-rate 0.05 --rate 300`, and checks the service with ListImages +",
            "ListImageBuildVersions.",
            "",
            f"- Machine: {machine()}",
            f"- Date: {datetime.date.today().isoformat()}",
            f"- Command: {command}",
            "",
            *lines,
            "",
        ]
    )
    text = README.read_text(encoding="utf-8")
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    README.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
