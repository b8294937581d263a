"""The comparison report and its numbers on hand-made runs (no training): self-contained HTML checked in a
real headless Chromium with the network blocked, the sample-efficiency definition, curve aggregation."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from evaluation.report import aggregate_curves, write_report
from evaluation.results import reference_methods, summarise
from tests.tools.browser import check_page, dump_dom, find_chromium

# CI installs chromium (./dev test), so there a missing browser fails instead of skipping
needs_chromium = pytest.mark.skipif(find_chromium() is None and not os.environ.get("CI"), reason="chromium is not installed (./dev test installs it on Debian as root)")


def _rows(final: float, start: float, episodes: int = 6, decisions: int = 40, learn: bool = True) -> list[dict]:
    """Metrics rows like the runner's: eval at 0 and after every episode, train rows in between."""
    rows, steps, wall = [], 0, 0.0
    curve = np.linspace(start, final, episodes + 1) if learn else np.full(episodes + 1, final)
    rows.append({"phase": "eval", "episode": 0, "env_steps": 0, "wall_s": 0.0, "mean_travel_time": float(curve[0]),
                 "arrival_rate": 0.8, "return": -3.0, "teleports": 0})  # fmt: skip
    for e in range(1, episodes + 1):
        steps += decisions
        wall += 1.5
        rows.append({"phase": "train", "episode": e, "env_steps": steps, "wall_s": wall, "decisions": decisions,
                     "decisions_per_s": decisions / 1.5, "mean_travel_time": float(curve[e]) + 5, "arrival_rate": 0.9,
                     "return": -2.5, "teleports": 1})  # fmt: skip
        wall += 0.5
        rows.append({"phase": "eval", "episode": e, "env_steps": steps, "wall_s": wall, "mean_travel_time": float(curve[e]),
                     "arrival_rate": 0.95, "return": -2.0, "teleports": 0})  # fmt: skip
    return rows


def _make_runs(root: Path, spec: dict[str, list[list[dict] | None]]) -> tuple[list[dict], dict]:
    runs, rows_by = [], {}
    for method, seeds in spec.items():
        for s, rows in enumerate(seeds):
            name = f"{method}-s{s}"
            d = root / "runs" / name
            d.mkdir(parents=True)
            ok = rows is not None
            rows = rows or []
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            runs.append({"name": name, "method": method, "seed": s, "dir": str(d), "status": "ok" if ok else "failed",
                         "error": None if ok else "RuntimeError: <script>alert('x')</script> & more", "process_s": 9.0})  # fmt: skip
            rows_by[name] = rows
    return runs, rows_by


def _comparison(methods: list[str], seeds: int = 2, episodes: int = 6) -> dict:
    return {"scenario": "helsinki", "scenario_build": "helsinki-test", "methods": methods, "seeds": seeds,
            "episodes": episodes, "agents": 8, "horizon": None, "eval_every": 1, "eval_seed": 10000}  # fmt: skip


@pytest.fixture(scope="module")
def report(helsinki, tmp_path_factory):
    """A report over hand-made runs: ippo learns (2 seeds), shortest does not, one ippo seed failed."""
    root = tmp_path_factory.mktemp("report")
    runs, rows = _make_runs(root, {"ippo": [_rows(200, 400), _rows(220, 420), None], "shortest": [_rows(180, 180, learn=False)] * 2})
    res = summarise(_comparison(["ippo", "shortest"], seeds=3), runs, rows)
    g = helsinki.graph
    trips = helsinki.trips(8)
    routes = {t.id: [g.edges[i] for i in g.path(g.index[t.origin], g.index[t.destination])] for t in trips}
    # one agent takes a detour: the map should pick it
    (root / "runs" / "ippo-s0" / "routes.json").write_text(json.dumps({"seed": 10000, "routes": routes}))
    res.update(id="abc12345", out=str(root), scenario_folder=str(helsinki.path), demos=None, executor="local", workers=2, wall_s=12.0)
    path = write_report(root, res)
    return path, res


def test_report_is_one_self_contained_file(report):
    path, res = report
    html = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|ftp:)""", html, re.I)
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html and "<link" not in html
    assert html.count("src='data:image/png;base64,") >= 3  # bars, curves, map
    # an error message is shown, escaped, never executed
    assert "&lt;script&gt;alert(" in html and "1 of 5 runs failed" in html
    assert "this project's own formalisation" in html and "arXiv 2511.19368" in html
    assert "mean ± sample standard deviation" in html
    # ippo: 2 finished seeds, final values 200 and 220 -> 210 ± 14.1
    assert "210.0 ± 14.1" in html and ">2/3<" in html  # runs ok: 2 of 3


def test_results_statistics_and_sample_efficiency(report):
    _, res = report
    ippo, shortest = res["methods"]["ippo"], res["methods"]["shortest"]
    assert ippo["runs"] == 3 and ippo["runs_ok"] == 2 and ippo["runs_failed"] == 1
    mtt = ippo["final"]["mean_travel_time"]
    assert mtt["mean"] == pytest.approx(210) and mtt["std"] == pytest.approx(np.std([200, 220], ddof=1))
    assert (mtt["min"], mtt["max"], mtt["n"]) == (200, 220, 2)
    assert shortest["final"]["mean_travel_time"]["std"] == 0 and not shortest["learns"]
    # reference: the learned baselines (ippo) -> target = 1.1 * 210 = 231
    ref = res["reference"]
    assert ref["methods"] == ["ippo"] and ref["value"] == pytest.approx(210) and ref["target"] == pytest.approx(231)
    # ippo-s0 eval curve: linspace(400, 200, 7) -> first <= 231 at episode 6 (233.3 at 5); ippo-s1: never (220 final <= 231: ep 6)
    by = {r["name"]: r for r in res["runs"]}
    assert by["ippo-s0"]["sample_efficiency"]["episode"] == 6 and by["ippo-s0"]["sample_efficiency"]["env_steps"] == 240
    assert by["ippo-s1"]["sample_efficiency"]["episode"] == 6
    assert by["ippo-s2"]["sample_efficiency"] is None and by["ippo-s2"]["status"] == "failed"
    assert by["shortest-s0"]["sample_efficiency"]["episode"] == 0  # 180 <= 231 from the start
    se = ippo["sample_efficiency"]
    assert se["reached"] == 2 and se["of"] == 2 and se["episodes"]["mean"] == 6


def test_a_comparison_that_samples_its_evaluations_says_so(report, tmp_path):
    """algorithm.ppo.eval_actions = sample: every title and note of the report names sampled evaluations."""
    from evaluation.results import evaluation_kind

    path, _ = report
    assert "greedy evaluation every 1" in path.read_text()
    runs, rows = _make_runs(tmp_path, {"ippo": [_rows(200, 400)]})
    comp = {**_comparison(["ippo"], seeds=1), "config": {"algorithm": {"ppo": {"eval_actions": "sample"}}}}
    assert evaluation_kind(comp) == "sampled" and evaluation_kind(_comparison(["ippo"])) == "greedy"
    res = summarise(comp, runs, rows)
    res.update(id="s1", out=str(tmp_path), scenario_folder=None, demos=None, executor="local", workers=1, wall_s=1.0)
    html = write_report(tmp_path, res).read_text()
    assert "sampled evaluation every 1" in html and "actions drawn from the policy" in html
    assert "greedy" not in html.replace("greedy route", "")


def test_reference_methods_and_an_unreached_target(tmp_path):
    assert reference_methods(["reled", "ippo", "mappo", "shortest"]) == ["ippo", "mappo"]
    assert reference_methods(["reled", "reled-nosed", "shortest"]) == ["shortest"]
    assert reference_methods(["reled", "reled-fixedw"]) == ["reled", "reled-fixedw"]
    assert reference_methods(["reled", "ippo", "shortest"], ["shortest"]) == ["shortest"]
    runs, rows = _make_runs(tmp_path, {"ippo": [_rows(300, 500)], "mappo": [_rows(150, 400)], "reled": [_rows(400, 600)]})
    res = summarise(_comparison(["reled", "ippo", "mappo"], seeds=1), runs, rows)
    assert res["reference"]["method"] == "mappo" and res["reference"]["target"] == pytest.approx(165)
    assert res["methods"]["reled"]["sample_efficiency"] == {"episodes": None, "env_steps": None, "wall_s": None, "reached": 0, "of": 1}
    assert res["methods"]["mappo"]["sample_efficiency"]["reached"] == 1


def test_curves_are_aggregated_on_the_range_all_seeds_cover():
    a = (np.array([0.0, 10, 20, 30]), np.array([4.0, 3, 2, 1]))
    b = (np.array([5.0, 15, 25]), np.array([6.0, 4, 2]))
    grid, mean, lo, hi = aggregate_curves([a, b], points=5)
    assert grid[0] == 5 and grid[-1] == 25
    ya, yb = np.interp(grid, *a), np.interp(grid, *b)
    assert np.allclose(mean, (ya + yb) / 2) and np.allclose(lo, np.minimum(ya, yb)) and np.allclose(hi, np.maximum(ya, yb))
    assert aggregate_curves([(np.array([0.0, 0, 0]), np.array([1.0, 2, 3]))]) is None  # no progress on x: not a curve


@needs_chromium
def test_report_renders_in_chromium_without_any_network_request(report, tmp_path):
    path, _ = report
    page = check_page(path, screenshot=tmp_path / "shot.png")
    assert page.requests[0] == path.resolve().as_uri()
    assert page.network_requests == [], page.network_requests
    assert all(i["ok"] for i in page.dom["imgs"]) and len(page.dom["imgs"]) >= 3
    tables = {t["id"]: t["rows"] for t in page.dom["tables"]}
    assert tables == {"results": 3, "first-beats": 2, "runs": 6}  # first-beats: a row per learned method
    assert page.dom["headings"][:2] == ["Comparison on helsinki", "Results"]
    assert "City map and example routes" in page.dom["headings"]
    assert page.dom["width"] <= 1200  # nothing overflows sideways
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = dump_dom(path)
    assert 'id="results"' in dom and "ippo" in dom and "&lt;script&gt;" in dom


@needs_chromium
def test_the_browser_check_does_see_network_requests(tmp_path):
    """The positive control: a page that loads remote resources is caught (and still renders, blocked)."""
    page = tmp_path / "remote.html"
    page.write_text(
        "<!DOCTYPE html><html><head><link rel='stylesheet' href='https://cdn.example.org/x.css'>"
        "<script src='http://cdn.example.org/lib.js'></script></head>"
        "<body><h1>t</h1><img src='https://example.com/a.png'><table id='t'><tr><td>1</td></tr></table></body></html>"
    )
    res = check_page(page)
    assert set(res.network_requests) >= {"https://cdn.example.org/x.css", "http://cdn.example.org/lib.js", "https://example.com/a.png"}
    assert res.dom["external"] and res.dom["headings"] == ["t"]
    assert not any(i["ok"] for i in res.dom["imgs"])  # blocked: nothing came back


def test_the_device_baseline_has_no_return_and_every_method_shows_all_vehicles(helsinki, tmp_path):
    """sumo-rerouting makes no decisions: its return does not apply ("—", never the best), and the table
    holds the all-vehicles mean beside the agents' for every method."""

    def with_all(rows, all_vehicles, decisions=None):
        out = []
        for r in rows:
            r = dict(r, all_vehicles_mean_travel_time=all_vehicles)
            if decisions is not None:
                r.update(decisions=decisions, **({"return": 0.0} if decisions == 0 else {}))
            out.append(r)
        return out

    runs, rows = _make_runs(tmp_path, {"ippo": [with_all(_rows(200, 400), 250.0, 40)],
                                       "sumo-rerouting": [with_all(_rows(190, 190, learn=False), 240.0, 0)]})  # fmt: skip
    res = summarise(_comparison(["ippo", "sumo-rerouting"], seeds=1), runs, rows)
    assert res["methods"]["sumo-rerouting"]["final"]["return"] is None
    assert res["methods"]["ippo"]["final"]["return"]["mean"] == pytest.approx(-2.0)
    assert res["methods"]["sumo-rerouting"]["final"]["all_vehicles_mean_travel_time"]["mean"] == 240.0
    res.update(id="x", out=str(tmp_path), scenario_folder=str(helsinki.path), demos=None, executor="local", workers=1,
               wall_s=1.0)  # fmt: skip
    table = re.search(r"<table id='results'>.*?</table>", write_report(tmp_path, res).read_text(), re.S).group(0)
    assert "all vehicles&#x27; mean travel time (s)" in table
    device = re.search(r"<tr><td>sumo-rerouting.*?</tr>", table, re.S).group(0)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", device, re.S)
    assert cells[2].startswith("190.0") and cells[3].startswith("240.0") and cells[5] == "—"
    assert "class='best'>0.00" not in table  # the device's missing return is never marked best


def test_rebuild_recomputes_results_from_the_runs_metrics(helsinki, tmp_path):
    """`python -m evaluation.report --rebuild DIR`: results.json written by older code (here: without the
    all-vehicles mean) is recomputed from the runs' metrics, keeping what the comparison recorded."""
    from evaluation.report import main

    rows = [dict(r, all_vehicles_mean_travel_time=260.0) for r in _rows(200, 400)]
    runs, by = _make_runs(tmp_path, {"ippo": [rows]})
    res = summarise(_comparison(["ippo"], seeds=1), runs, by)
    res.update(id="old", out=str(tmp_path), scenario_folder=str(helsinki.path), demos=None, executor="local",
               workers=1, wall_s=3.0)  # fmt: skip
    for m in res["methods"].values():
        del m["final"]["all_vehicles_mean_travel_time"]
    (tmp_path / "results.json").write_text(json.dumps(res))
    main(["--rebuild", str(tmp_path)])
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["methods"]["ippo"]["final"]["all_vehicles_mean_travel_time"]["mean"] == 260.0
    assert again["id"] == "old" and again["wall_s"] == 3.0 and (tmp_path / "report.html").is_file()
