"""`cosim scenario …`: list, build and show city scenarios.

Plugged into `cosim` through the ``cosim.commands`` entry point (see `cosim.cli`). Human-facing progress goes to stderr (rich), so stdout carries only the
result — `build` prints the built folder's path as its last line and `show --json` prints the manifest
— and scripts can capture it. Errors are ScenarioError (a UserError): the console script prints them
as one `error: …` line and exits 2; `main()` below does the same when this module runs on its own.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from scenarios.errors import ScenarioError

app = typer.Typer(
    help="Build, list and inspect city scenarios (OSM -> SUMO).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)


@contextmanager
def _progress():
    """A progress callback: a rich spinner on a terminal, plain dim lines otherwise (logs, CI, pipes)."""
    if err.is_terminal:
        with err.status("resolving scenario…") as status:
            yield status.update
    else:
        yield lambda msg: err.print(f"[dim]{msg}[/]", highlight=False, soft_wrap=True)


def _ensure(target, **kwargs):
    from scenarios.build import ensure_built

    with _progress() as progress:
        return ensure_built(target, progress=progress, **kwargs)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Shipped city recipes and the scenarios built in the cache."""
    from rich.table import Table

    from core.paths import home_dir
    from scenarios import cache, recipe

    home_dir("scenarios", writable=False)  # COSIM_HOME a file or impossible: say so instead of "none built"
    shipped = []
    for name, path in recipe.shipped().items():
        try:
            r = recipe.load(name)
        except ScenarioError as exc:
            shipped.append({"name": name, "recipe": str(path), "error": str(exc)})
            continue
        d = r.demand
        shipped.append({"name": name, "description": r.description, "recipe": str(path),
                        "background_veh_per_hour": d["background_veh_per_hour"], "agents": d["agents"],
                        "horizon": d["horizon"], "default": name == recipe.DEFAULT_CITY})  # fmt: skip
    built = [
        {"name": m.get("name"), "folder": str(p), "built_at": m.get("built_at"),
         "source": m.get("source", {}).get("kind"), **{k: m.get("counts", {}).get(k) for k in
                                                      ("edges", "signals", "road_km", "agent_pool")}}
        for p, m in cache.entries()
    ]  # fmt: skip
    if as_json:
        print(json.dumps({"shipped": shipped, "built": built, "cache": str(cache.root())}, indent=2))
        return
    out = Console()
    t = Table(title="Shipped cities", title_justify="left")
    for col in ("name", "description", "veh/h", "agents", "horizon s"):
        t.add_column(col)
    for s in shipped:
        mark = " (default)" if s.get("default") else ""
        t.add_row(s["name"] + mark, s.get("description", s.get("error", "")),
                  str(s.get("background_veh_per_hour", "")), str(s.get("agents", "")), str(s.get("horizon", "")))  # fmt: skip
    out.print(t)
    t = Table(title=f"Built scenarios in {cache.root()}", title_justify="left")
    for col in ("name", "source", "edges", "signals", "km", "built", "folder"):
        t.add_column(col, overflow="fold")
    for b in built:
        t.add_row(str(b["name"]), str(b["source"]), str(b["edges"]), str(b["signals"]), str(b["road_km"]),
                  str(b["built_at"]), Path(b["folder"]).name)  # fmt: skip
    if not built:
        t.add_row("(none yet)", "", "", "", "", "", "")
    out.print(t)


@app.command()
def build(
    name: str | None = typer.Argument(None, help="Shipped city, recipe .toml, or built scenario (default: helsinki)."),
    osm: Path | None = typer.Option(None, "--osm", help="Local .osm / .osm.pbf (any pyosmium format)."),
    bbox: str | None = typer.Option(None, "--bbox", help="W,S,E,N in degrees; downloaded from Overpass."),
    place: str | None = typer.Option(None, "--place", help="Place name, geocoded by Nominatim (osmnx)."),
    net: Path | None = typer.Option(None, "--net", help="Existing SUMO .net.xml / .net.xml.gz."),
    sumocfg: Path | None = typer.Option(
        None, "--sumocfg", help="A SUMO scenario (.sumocfg): its net, demand, additional files, begin and end."
    ),
    routes: str | None = typer.Option(
        None, "--routes", help="With --net: route/trip/flow files (FILE[,FILE...]), the scenario's demand."
    ),
    trips: Path | None = typer.Option(
        None, "--trips", help="With --net or --sumocfg: a CSV trips table id,from,to,depart[,vtype]."
    ),
    as_name: str | None = typer.Option(None, "--name", help="Name for an ad-hoc scenario."),
    agents: int | None = typer.Option(
        None, "--agents", min=0, help="Default number of controlled agents (0: a plain run of imported demand)."
    ),
    agent_share: float | None = typer.Option(
        None, "--agent-share", help="Imported demand: the share of eligible passenger vehicles that become agents."
    ),
    demand: str | None = typer.Option(
        None, "--demand", help="Generated background: osm (weighted by homes and activities; default) or uniform."
    ),
    demand_scale: float | None = typer.Option(
        None, "--demand-scale", help="Multiply the background demand (generated or imported) by this factor."
    ),
    background_routing: str | None = typer.Option(
        None,
        "--background-routing",
        help="Imported demand: insertion (trips routed by SUMO as they enter; default) or fixed (routes recorded "
        "once at build time and replayed, so no method's settings change how the background drives).",
    ),  # fmt: skip
    agent_pool: int | None = typer.Option(None, "--agent-pool", min=1, help="Routable agent trips to precompute."),
    veh_per_hour: float | None = typer.Option(None, "--veh-per-hour", min=0, help="Background vehicles per hour."),
    horizon: float | None = typer.Option(None, "--horizon", min=1, help="Simulated seconds per episode."),
    min_trip_m: float | None = typer.Option(None, "--min-trip-m", min=0, help="Shortest agent trip, metres."),
    seed: int | None = typer.Option(None, "--seed", min=0, help="Seed for background and agent trips."),
    overpass_url: str | None = typer.Option(
        None, "--overpass-url", help="Overpass API endpoint (default: $COSIM_OVERPASS_URL or the public one)."
    ),
    nominatim_url: str | None = typer.Option(
        None, "--nominatim-url", help="Nominatim endpoint (default: $COSIM_NOMINATIM_URL or osmnx's)."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the cache holds this build."),
) -> None:
    """Build a scenario (or find it in the cache); prints the built folder as the last line."""
    from scenarios import osm as endpoints
    from scenarios import recipe

    if overpass_url is not None:  # a typo in an endpoint is reported even when this source needs none
        endpoints.overpass_url(overpass_url)
    if nominatim_url is not None:
        endpoints.nominatim_url(nominatim_url)
    given = {"NAME": name, "--osm": osm, "--bbox": bbox, "--place": place, "--net": net, "--sumocfg": sumocfg}
    chosen = [k for k, v in given.items() if v is not None]
    if len(chosen) > 1:
        raise ScenarioError(f"give one source, not {' and '.join(chosen)}")
    if agent_share is not None and not 0 < agent_share <= 1:
        raise ScenarioError(f"--agent-share must be in (0, 1], got {agent_share:g}")
    if agent_share is not None and agents is not None:
        raise ScenarioError("give --agents or --agent-share, not both")
    if demand_scale is not None and not (demand_scale >= 0 and demand_scale < float("inf")):
        raise ScenarioError(f"--demand-scale must be a number >= 0, got {demand_scale:g}")
    route_files = [f for f in (routes or "").split(",") if f.strip()] or None
    if routes is not None and net is None:
        raise ScenarioError("--routes needs --net (route files name the edges of that net)")
    if trips is not None and net is None and sumocfg is None:
        raise ScenarioError("--trips needs --net or --sumocfg (a trips table names the edges of a SUMO net)")
    tables = [str(trips)] if trips is not None else None
    if osm is not None:
        target = recipe.adhoc("file", str(osm), as_name)
    elif net is not None:
        target = recipe.adhoc("net", str(net), as_name, routes=route_files, trips=tables)
    elif sumocfg is not None:
        target = recipe.adhoc("sumocfg", str(sumocfg), as_name, trips=tables)
    elif bbox is not None:
        target = recipe.adhoc("bbox", bbox, as_name)
    elif place is not None:
        target = recipe.adhoc("place", place, as_name)
    else:
        target = name or recipe.DEFAULT_CITY
    overrides = dict(agents=agents, agent_pool=agent_pool, veh_per_hour=veh_per_hour, horizon=horizon,
                     min_trip_m=min_trip_m, seed=seed, agent_share=agent_share, demand_scale=demand_scale,
                     demand=demand, background_routing=background_routing)  # fmt: skip
    if as_name is not None and isinstance(target, str):
        overrides["name"] = as_name  # ad-hoc recipes already carry it
    sc = _ensure(target, force=force, overpass_url=overpass_url, nominatim_url=nominatim_url, **overrides)
    c = sc.manifest.get("counts", {})
    err.print(
        f"[green]{sc.name}[/]: {c.get('edges')} edges, {c.get('junctions')} junctions, {c.get('signals')} "
        f"signals, {c.get('road_km')} km; {c.get('background_vehicles')} background vehicles, "
        f"{c.get('agent_pool')} agent trips"
        + (f" ({c.get('agents')} agents chosen from the demand)" if "agents" in c else ""),
        highlight=False,
        soft_wrap=True,
    )
    print(sc.path)


@app.command()
def show(
    name: str = typer.Argument("helsinki", help="Shipped city, recipe .toml, built folder or cache entry."),
    as_json: bool = typer.Option(False, "--json", help="Print manifest.json as JSON."),
) -> None:
    """Print a scenario's manifest (building it first if it is not built)."""
    sc = _ensure(name)
    if as_json:
        print(json.dumps(sc.manifest, indent=2, ensure_ascii=False))
        return
    from rich.table import Table

    m = sc.manifest
    t = Table(show_header=False, title=f"{m['name']} — {sc.path}", title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    src = m.get("source", {})
    t.add_row("source", ", ".join(f"{k}={v}" for k, v in src.items() if k not in ("osm",)))
    for k, v in m.get("counts", {}).items():
        t.add_row(k, str(v))
    for k, v in m["recipe"]["demand"].items():
        t.add_row(f"demand.{k}", str(v))
    for label, value in demand_provenance(m):
        t.add_row(label, value)
    t.add_row("seed", str(m["recipe"].get("seed")))
    t.add_row("sumo", str(m.get("sumo_version")))
    t.add_row("built", str(m.get("built_at")))
    t.add_row("data", f"{m.get('attribution')} ({m.get('licence')})")
    Console().print(t)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="scenario", help="Build, list and inspect city scenarios.")


def demand_provenance(m: dict) -> list[tuple[str, str]]:
    """Where the scenario's traffic comes from, as (label, value) rows: imported files with their hashes,
    vehicles by type, the agents chosen and the background left; or the generated demand's source."""
    rows = []
    imp = m.get("import")
    if imp is not None:
        for f in imp["files"]:
            rows.append(("demand file", f"{f['path']} (sha256 {f['sha256'][:16]}…)"))
        rows.append(("vehicles by type", ", ".join(f"{k} {v}" for k, v in imp["vehicles_by_type"].items())))
        if imp.get("flows_expanded"):
            rows.append(("flows expanded", str(imp["flows_expanded"])))
        share = f", share {imp['agent_share']:g}" if imp.get("agent_share") else ""
        window = "–".join(f"{x:g}" for x in imp["agent_window"])
        rows.append(("agents chosen", f"{imp['agents_chosen']} of {imp['eligible_agents']} eligible "
                                      f"(passenger, departing {window} s{share})"))  # fmt: skip
        rows.append(("background", f"{sum(imp['background_by_type'].values())} "
                                   f"({', '.join(f'{k} {v}' for k, v in imp['background_by_type'].items())}), "
                                   f"scale {imp['scale']:g}"))  # fmt: skip
        rows.append(("time", f"begin {m['time']['begin']:g} s, end {m['time']['end']:g} s"))
        if imp.get("sumo_options"):
            rows.append(("sumo options kept", ", ".join(f"{k}={v}" for k, v in imp["sumo_options"].items())))
        if imp.get("dropped_options"):
            rows.append(("sumo options dropped", ", ".join(imp["dropped_options"])))
    routing = m.get("background_routing")
    if routing is not None:
        how = {"fixed": "fixed routes, the same in every episode", "insertion": "routed by SUMO as they enter"}
        rows.append(("background routing", f"{how.get(routing['mode'], routing['mode'])}; "
                                           f"{routing['routed_at_insertion']} vehicles routed at insertion"))  # fmt: skip
    gen = m.get("generated")
    if gen is not None:
        rows.append(
            ("background demand", ", ".join(f"{k}={v}" for k, v in gen.items() if not isinstance(v, dict | list)))
        )
    return rows


def main() -> None:
    """Run this sub-app on its own (python -m scenarios.cli), with the console script's error contract."""
    from core.errors import run_app

    run_app(app)


if __name__ == "__main__":
    main()
