"""Generate manifests of valid, varied tasks, deterministically: for rehearsals and tests.

    .venv/bin/python manifests/generate.py --rows 10000 --format jsonl --out wave.jsonl
    .venv/bin/python manifests/generate.py --rows 50 --format csv --out - --seed 7
    .venv/bin/python manifests/generate.py --examples   # rewrite the examples here

The same --rows and --seed give the same tasks in every format (so the same clientTokens).
--examples rewrites the committed examples in this directory and checks them with
ibimport.manifest, so they cannot drift from the rules:

example.csv    300 valid, varied tasks (tags as tag: columns and a tags JSON column)
example.jsonl  the same tasks in another order (identical clientTokens)
example.json   an object with defaults and a few tasks
invalid.csv    one row per broken rule, for `ibimport validate`
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEED = 20240611
ROWS = 300

OS_VERSIONS = {
    "Windows": [
        "Microsoft Windows Server 2016",
        "Microsoft Windows Server 2019",
        "Microsoft Windows Server 2022",
        "Microsoft Windows 10",
    ],
    "Linux": [
        "Ubuntu 20.04",
        "Ubuntu 22.04",
        "Red Hat Enterprise Linux 8",
        "Red Hat Enterprise Linux 9",
        "Amazon Linux 2",
        "CentOS 7",
        "SUSE Linux Enterprise Server 15",
        "Debian 12",
    ],
    "macOS": ["macOS 13", "macOS 14"],
}
ROLES = {
    "Windows": ["ad-controller", "sql-server", "iis-web", "file-server", "rds-host", "exchange"],
    "Linux": ["web-frontend", "api-gateway", "kafka-broker", "postgres", "redis-cache", "nginx"],
    "macOS": ["ci-builder", "xcode-runner"],
}
DESCRIPTIONS = [
    "Migrated from vSphere cluster {dc}",
    "Golden image exported from {dc}, hardened per CIS level 1",
    "Legacy workload from {dc}; owner sign-off in CHG-{n}",
    "Lift-and-shift of {role} from {dc}",
]
TEAMS = ["platform", "payments", "identity", "data", "retail", "mobile"]
DATACENTERS = ["fra-dc1", "ams-dc2", "dub-dc1", "iad-colo"]
FIELDS = ["name", "semanticVersion", "description", "platform", "osVersion", "vmImportTaskId"]
TAG_COLUMNS = ["Env", "Wave", "Owner"]


def tasks(rng: random.Random, rows: int = ROWS) -> list[dict[str, Any]]:
    """``rows`` varied, valid tasks with unique name+semanticVersion."""
    out: list[dict[str, Any]] = []
    counters: dict[str, int] = {}
    for i in range(rows):
        platform = rng.choices(["Linux", "Windows", "macOS"], weights=[60, 35, 5])[0]
        role = rng.choice(ROLES[platform])
        counters[role] = counters.get(role, 0) + 1
        dc = rng.choice(DATACENTERS)
        task: dict[str, Any] = {
            "name": f"{role}-{counters[role]:02d}",
            "semanticVersion": f"{rng.randint(1, 3)}.{rng.randint(0, 12)}.{rng.randint(0, 40)}",
            "platform": platform,
            "vmImportTaskId": f"import-ami-0{rng.getrandbits(64):016x}",
        }
        if rng.random() < 0.9:
            task["osVersion"] = rng.choice(OS_VERSIONS[platform])
        if rng.random() < 0.4:
            template = rng.choice(DESCRIPTIONS)
            task["description"] = template.format(dc=dc, n=rng.randint(1000, 9999), role=role)
        tags = {"Env": rng.choice(["prod", "prod", "staging", "dev"]), "Wave": str(1 + i // 60)}
        if rng.random() < 0.7:
            tags["Owner"] = rng.choice(TEAMS)
        if rng.random() < 0.3:
            tags["CostCenter"] = f"cc-{rng.randint(1000, 1999)}"
        if rng.random() < 0.15:
            tags["SourceDatacenter"] = dc
        task["tags"] = tags
        if rng.random() < 0.1:
            task["logGroupName"] = "/aws/imagebuilder/migration"
        out.append(task)
    return out


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Env/Wave/Owner as tag: columns, any other tag in the tags JSON column."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*FIELDS, *(f"tag:{k}" for k in TAG_COLUMNS), "tags", "logGroupName"])
    for task in rows:
        tags = task.get("tags", {})
        rest = {k: v for k, v in tags.items() if k not in TAG_COLUMNS}
        writer.writerow(
            [
                *(task.get(f, "") for f in FIELDS),
                *(tags.get(k, "") for k in TAG_COLUMNS),
                json.dumps(rest, separators=(",", ":")) if rest else "",
                task.get("logGroupName", ""),
            ]
        )
    return buf.getvalue()


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(task, ensure_ascii=False) + "\n" for task in rows)


def example_json(rng: random.Random) -> str:
    tasks_ = []
    for i in range(1, 6):
        task: dict[str, Any] = {
            "name": f"billing-app-{i:02d}",
            "semanticVersion": "1.0.0",
            "vmImportTaskId": f"import-ami-0{rng.getrandbits(64):016x}",
        }
        if i == 2:
            task["osVersion"] = "Red Hat Enterprise Linux 9"  # overrides the default
        if i == 4:
            task["tags"] = {"Env": "staging"}  # merged over the default tags
        tasks_.append(task)
    doc = {
        "defaults": {
            "platform": "Linux",
            "osVersion": "Ubuntu 22.04",
            "tags": {"Env": "prod", "Wave": "7", "Owner": "payments"},
        },
        "tasks": tasks_,
    }
    return json.dumps(doc, indent=2) + "\n"


INVALID_CSV = """\
name,semanticVersion,platform,osVersion,vmImportTaskId,description,tag:Env,tags,platfrom
good-01,1.0.0,Linux,Ubuntu 22.04,import-ami-0a1b2c3d4e5f60718,,prod,,
bad-version,1.0,Linux,Ubuntu 22.04,import-ami-0a1b2c3d4e5f60719,,prod,,
bad-platform,1.0.0,Win2019,,import-ami-0a1b2c3d4e5f6071a,,prod,,
no-task-id,1.0.0,Windows,Microsoft Windows Server 2019,,,prod,,
bad-node,1.0.2147483648,Linux,,import-ami-0a1b2c3d4e5f6071b,,prod,,
reserved-tag,1.0.0,Linux,,import-ami-0a1b2c3d4e5f6071c,,prod,"{""aws:owner"":""me""}",
typo-column,1.0.0,,,import-ami-0a1b2c3d4e5f6071d,,prod,,Linux
good-01,1.0.0,Linux,Ubuntu 22.04,import-ami-0a1b2c3d4e5f6071e,,prod,,
bad-tags-cell,1.0.0,macOS,,import-ami-0a1b2c3d4e5f6071f,,dev,Env=dev,
too-long-description,1.0.0,Linux,,import-ami-0a1b2c3d4e5f60720,{long},prod,,
ragged-row,1.0.0,Linux
""".replace("{long}", "x" * 1025)


def write_examples() -> None:
    rng = random.Random(SEED)
    rows = tasks(rng)
    shuffled = rows[:]
    rng.shuffle(shuffled)
    outputs = {
        "example.csv": to_csv(rows),
        "example.jsonl": to_jsonl(shuffled),
        "example.json": example_json(rng),
        "invalid.csv": INVALID_CSV,
    }
    for name, text in outputs.items():
        (HERE / name).write_text(text, encoding="utf-8", newline="")
    check()


def check() -> None:
    """Every example is valid (invalid.csv: all but one row), CSV and JSONL agree on tokens."""
    from ibimport.domain.tokens import client_token
    from ibimport.manifest import read_manifest

    by_format = {}
    for name in ("example.csv", "example.jsonl", "example.json"):
        rows = list(read_manifest(HERE / name))
        bad = [line for row in rows for line in row.describe()]
        assert not bad, (name, bad[:5])
        by_format[name] = {
            (r.name, r.semantic_version): client_token(r.task) for r in rows if r.task
        }
    assert by_format["example.csv"] == by_format["example.jsonl"]
    invalid = list(read_manifest(HERE / "invalid.csv"))
    assert [r.row for r in invalid if r.task is not None] == [1], invalid
    written = ", ".join(sorted(by_format))
    print(f"wrote {written} ({ROWS} tasks) and invalid.csv ({len(invalid)} rows)")


FORMATS = {
    "csv": to_csv,
    "jsonl": to_jsonl,
    "json": lambda rows: json.dumps(rows, indent=2, ensure_ascii=False) + "\n",
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="manifests/generate.py",
        description="Write a manifest of valid, varied ImportVmImage tasks (deterministic).",
        epilog="Example: manifests/generate.py --rows 10000 --format jsonl --out wave.jsonl",
    )
    parser.add_argument("--rows", type=_positive, metavar="N", help="how many tasks")
    parser.add_argument("--format", choices=sorted(FORMATS), help="default: from --out's suffix")
    parser.add_argument("--out", metavar="FILE", help="where to write; - for stdout")
    parser.add_argument("--seed", type=int, default=SEED, metavar="S", help="default: %(default)s")
    parser.add_argument(
        "--examples", action="store_true", help="rewrite and check the examples in manifests/"
    )
    args = parser.parse_args(argv)
    if args.examples:
        if args.rows or args.out:
            parser.error("--examples takes no --rows or --out")
        write_examples()
        return 0
    if args.rows is None or args.out is None:
        parser.error("--rows and --out are required (or --examples)")
    fmt = args.format or Path(args.out).suffix.lstrip(".")
    if fmt not in FORMATS:
        parser.error(f"--format csv, json or jsonl (cannot tell from {args.out!r})")
    text = FORMATS[fmt](tasks(random.Random(args.seed), args.rows))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8", newline="")
        print(f"wrote {args.out} ({args.rows} tasks, {fmt}, seed {args.seed})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
