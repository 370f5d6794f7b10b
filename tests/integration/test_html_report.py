"""The wave report opened in a real headless Chromium (issue 20).

A wave's journal is built with the real CLI against an emulator in its own process: two
Regions (the manifest's ``region`` column), a quota that throttles, 5xx faults, import
tasks that are missing or failed (blocked rows), rows whose clientToken clashes (failed
rows), a stop (SIGINT) and a resume with ``--wait``. The page is rendered, opened with
``chromium --headless --dump-dom`` and ``--screenshot``, and read as a person and a
script would. Skipped only where Chromium is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import stat
import struct
import subprocess
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from integration_support import _call, boto_client, make_tasks, read_report, read_results
from resume_support import Children, Emulator, run_args, wait_for_done

from ibimport.emulator import EmulatorConfig
from ibimport.manifest import read_manifest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

#: A bound on a hung browser only: a page opens in well under a second.
BROWSER_TIMEOUT_S = 120.0
ROWS = 240


def chromium(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Headless Chromium as CI runs it (as root in a container: no sandbox, no GPU)."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        *args,
    ]
    return subprocess.run(command, capture_output=True, timeout=BROWSER_TIMEOUT_S, check=True)


def dump_dom(page: Path) -> str:
    """The page's DOM after its script ran."""
    return chromium("--dump-dom", page.resolve().as_uri()).stdout.decode("utf-8")


def screenshot(page: Path, png: Path, *, height: int = 2000) -> Path:
    chromium(f"--screenshot={png}", f"--window-size=1100,{height}", page.resolve().as_uri())
    return png


def png_pixels(path: Path) -> list[bytes]:
    """The pixels of an 8-bit RGB(A) PNG, decoded with zlib alone (no imaging library)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, header = 8, b"", b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8
    assert color in (2, 6)
    size = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * size
    previous, pixels = bytearray(stride), []
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, row = line[0], bytearray(line[1:])
        for x in range(stride):
            a = row[x - size] if x >= size else 0
            b, c = previous[x], previous[x - size] if x >= size else 0
            if kind == 1:
                row[x] = (row[x] + a) & 0xFF
            elif kind == 2:
                row[x] = (row[x] + b) & 0xFF
            elif kind == 3:
                row[x] = (row[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                row[x] = (row[x] + pred) & 0xFF
        pixels.extend(bytes(row[i : i + 3]) for i in range(0, stride, size))
        previous = row
    return pixels


class Dom(HTMLParser):
    """What the tests read from the browser's DOM."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self.styles: list[str] = []
        self.island = ""
        self.steps: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.classes: list[tuple[int, str]] = []
        self.svgs: list[str] = []
        self._in: str | None = None
        self._class_count = 0
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.urls += [v for k, v in found.items() if k in {"src", "href", "xlink:href", "action"}]
        if "style" in found:
            self.styles.append(found["style"])
        self._in = None
        if tag == "script" and found.get("id") == "report":
            self._in = "island"
        elif tag == "style":
            self._in = "style"
        elif "data-step" in found:
            self._in, self._key = "step", found["data-step"]
        elif "data-total" in found:
            self._in, self._key = "total", found["data-total"]
        elif found.get("class") == "count":
            self._in = "count"
        elif found.get("class") == "label":
            self._in = "label"
        elif tag == "svg":
            self.svgs.append(found.get("aria-label", ""))

    def handle_data(self, data: str) -> None:
        number = data.strip().replace(",", "")
        if self._in == "island":
            self.island += data
        elif self._in == "style":
            self.styles.append(data)
        elif self._in == "step":
            self.steps[self._key] = int(number)
        elif self._in == "total":
            self.totals[self._key] = int(number) if number.isdigit() else -1
        elif self._in == "count":
            self._class_count = int(number)
        elif self._in == "label":
            self.classes.append((self._class_count, data))
        self._in = None if self._in != "island" else self._in

    def handle_endtag(self, tag: str) -> None:
        self._in = None


#: us-east-1 rows whose explicit clientToken another tool already used for another image:
#: the service refuses them (IdempotentParameterMismatch), so they fail.
CLASHING = (10, 20, 40, 50, 70, 80)


def _wave_manifest(path: Path) -> Path:
    """Two Regions; six us-east-1 rows carry clientTokens already used (they fail)."""
    tasks = make_tasks(ROWS, seed=20)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "semanticVersion", "platform", "vmImportTaskId", "region",
                         "clientToken"])  # fmt: skip
        for i, task in enumerate(tasks):
            region = "eu-west-1" if i % 3 == 0 else "us-east-1"
            token = f"wave-token-used-{i}" if i in CLASHING else ""
            writer.writerow(
                [task["name"], task["semanticVersion"], task["platform"],
                 task["vmImportTaskId"], region, token]
            )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def wave_emulator() -> Any:
    """A 40/s quota with a small burst, 3% faults, and tasks: 90% completed, the rest not."""
    config = EmulatorConfig(
        rate=40.0,
        burst=4,
        fault_rate=0.03,
        latency_ms=15.0,
        available_after_s=0.5,
        task_mix="completed=0.9,deleted=0.05,missing=0.05",
        seed=20,
    )
    with Emulator(config) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def wave(wave_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wave's files: stopped once by SIGINT, then resumed to the end with --wait."""
    folder = tmp_path_factory.mktemp("wave")
    manifest = _wave_manifest(folder / "wave.csv")
    client = boto_client(wave_emulator.url)
    for i in CLASHING:  # another tool's imports, under the tokens those rows name
        _call(
            client.import_vm_image,
            name=f"other-tool-{i}",
            semanticVersion="1.0.0",
            platform="Linux",
            vmImportTaskId="import-ami-0123456789abcdef0",
            clientToken=f"wave-token-used-{i}",
        )
    client.close()
    journal = folder / "wave.journal"
    html = folder / "wave.html"
    args = run_args(manifest, wave_emulator.url, "--preflight", "--max-attempts", "3")
    with Children(folder) as children:
        first = children.start(*args, "--html", str(html))
        wait_for_done(journal, first, at_least=30)
        first.signal(signal.SIGINT)
        stopped = first.wait()
        stopped.assert_clean()
        assert stopped.returncode == 130, stopped.stderr
        assert html.is_file(), "a stopped run writes its wave report too"
        files = {"stopped_html": folder / "stopped.html"}
        html.rename(files["stopped_html"])
        second = children.run(
            *args, "--wait", "--poll-interval", "0.5", "--html", str(html),
            "--failed-manifest", str(folder / "failed.csv"),
        )  # fmt: skip
        second.assert_clean()
        assert second.returncode == 1, second.stderr  # some rows failed or are blocked
        assert f"wave report  {html}" in second.stdout
        reported = children.run(
            "report", str(journal), "--report", "-", "--html", str(folder / "report.html")
        )
        reported.assert_clean()
        assert reported.returncode == 0, reported.stderr
    (folder / "stdout-report.json").write_text(reported.stdout, encoding="utf-8")
    return {
        **files,
        "folder": folder,
        "manifest": manifest,
        "journal": journal,
        "html": html,
        "report_html": folder / "report.html",
        "report": folder / "wave.report.json",
        "stdout_report": folder / "stdout-report.json",
        "results": folder / "wave.results.csv",
        "failed": folder / "failed.csv",
    }


def test_the_wave_was_the_wave_the_report_should_show(wave: dict[str, Path]) -> None:
    report = read_report(wave["report"])
    totals = report["totals"]
    assert totals["rows"] == ROWS
    assert totals["failed"] >= 1  # the clashing clientTokens
    assert totals["blocked"] >= 1  # missing or failed import tasks
    assert report["batch"]["runs"] == 2
    assert report["batch"]["interrupted_runs"] == 1
    assert report["batch"]["throttled"] >= 1
    for path in (wave["html"], wave["stopped_html"], wave["report_html"], wave["failed"]):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


@needs_chromium
def test_the_browser_shows_the_funnel_the_failure_classes_and_the_json_report(
    wave: dict[str, Path],
) -> None:
    report = read_report(wave["report"])
    totals = report["totals"]
    results = read_results(wave["results"])

    dom = Dom(dump_dom(wave["html"]))

    assert json.loads(dom.island) == report
    assert dom.steps["rows"] == totals["rows"]
    assert dom.steps["image imported"] == totals["succeeded"] + totals["exists"]
    assert dom.steps["AVAILABLE"] == report["imageStatus"]["AVAILABLE"]
    assert dom.steps["task started"] + totals["invalid"] <= totals["rows"]
    for status in ("succeeded", "exists", "failed", "blocked", "invalid", "skipped"):
        assert dom.totals[status] == totals[status], status
    assert dom.totals["calls"] == report["batch"]["calls"]
    assert dom.totals["throttled"] == report["batch"]["throttled"]
    not_done = [r for r in results if r["status"] not in ("succeeded", "exists")]
    by_code = Counter(r["errorCode"] for r in not_done)
    labels = " ".join(label for _, label in dom.classes)
    for code in by_code:
        assert code in labels, (code, labels)
    assert sum(count for count, _ in dom.classes) == len(not_done)
    assert sorted(dom.svgs) == [
        "timeline of 123456789012/eu-west-1",
        "timeline of 123456789012/us-east-1",
    ]


@needs_chromium
def test_report_html_embeds_the_document_report_prints(wave: dict[str, Path]) -> None:
    printed = json.loads(wave["stdout_report"].read_text(encoding="utf-8"))

    dom = Dom(dump_dom(wave["report_html"]))

    assert json.loads(dom.island) == printed
    assert dom.totals["rows"] == printed["totals"]["rows"]


@needs_chromium
def test_nothing_in_the_page_can_reach_the_network(wave: dict[str, Path]) -> None:
    for page in (wave["html"], wave["stopped_html"]):
        dom = Dom(dump_dom(page))

        assert dom.urls == []
        assert not [s for s in dom.styles if "url(" in s.lower()]
        text = page.read_text(encoding="utf-8")
        assert "http://" not in text
        assert "https://" not in text


@needs_chromium
def test_a_screenshot_of_the_page_is_not_blank(wave: dict[str, Path]) -> None:
    png = screenshot(wave["html"], wave["folder"] / "wave.png")

    pixels = png_pixels(png)
    colors = Counter(pixels[::7])
    _, most = colors.most_common(1)[0]
    assert len(colors) > 50  # text, bars, bands and lines, antialiased
    assert most / sum(colors.values()) < 0.95
    assert any(p[0] > 150 and p[1] < 80 and p[2] < 80 for p in colors)  # failures in red
    assert any(p[2] > 120 and p[0] < 80 for p in colors)  # calls in blue


def test_the_failed_manifest_holds_the_rows_not_done_in_the_manifests_columns(
    wave: dict[str, Path],
) -> None:
    results = read_results(wave["results"])
    not_done = {
        int(r["row"])
        for r in results
        if r["status"] not in ("succeeded", "exists") or r["imageStatus"] not in ("", "AVAILABLE")
    }

    copied = list(read_manifest(wave["failed"]))

    header = wave["failed"].read_text(encoding="utf-8").splitlines()[0]
    assert header == wave["manifest"].read_text(encoding="utf-8").splitlines()[0]
    original = {m.row: m for m in read_manifest(wave["manifest"])}
    assert sorted((m.name, m.semantic_version) for m in copied) == sorted(
        (original[row].name, original[row].semantic_version) for row in not_done
    )
    assert all(m.task is not None for m in copied)


def test_outputs_that_would_overwrite_an_input_are_refused_before_anything_is_sent(
    wave_emulator: Emulator, children: Children, tmp_path: Path
) -> None:
    manifest = _wave_manifest(tmp_path / "again.csv")
    before = manifest.read_bytes()
    sent = wave_emulator.imports()

    refused = children.run(
        *run_args(manifest, wave_emulator.url, "--failed-manifest", str(manifest))
    )
    no_journal = children.run(
        *run_args(manifest, wave_emulator.url, "--no-journal", "--html", str(tmp_path / "w.html"))
    )

    refused.assert_clean()
    assert refused.returncode == 2
    assert "--failed-manifest" in refused.stderr
    assert "same file" in refused.stderr
    assert manifest.read_bytes() == before
    assert no_journal.returncode == 2
    assert "--html needs the journal" in no_journal.stderr
    assert wave_emulator.imports() == sent
    assert not (tmp_path / "w.html").exists()
