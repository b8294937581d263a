"""The kernel: the one place that talks to SUMO at run time (Flow's "kernel" idea).

The environment, the baselines and the LLM plan executor all drive SUMO through `SumoKernel`, so the
backend choice, the subscription layout, reload-vs-restart and fault handling live here only.

Backends
* ``libsumo`` (default): SUMO runs inside this process, no socket; one simulation per process.
* ``traci``: a SUMO child process per kernel, with its own connection label, so several simulations can
  run in one process and ``sumo-gui`` can be shown.

Speed: per simulation step the kernel reads the time and the departed / arrived / teleported ids
(TraCI: one simulation subscription that comes back with the step; libsumo: four direct calls, cheaper
than SUMO filling a subscription) and nothing per vehicle. Per-vehicle reads happen only when
the environment asks about a specific agent, and how they are made depends on the backend:
* TraCI subscribes each agent's road, position and speed when it departs, so a read is a lookup in the
  results that arrived with the step instead of a socket round trip;
* libsumo reads them with plain getters: there a getter is a direct C++ call that costs the same as
  fetching a subscription result, while every subscription makes SUMO compute and store its values for
  every subscribed vehicle at every step (measured with callgrind on helsinki, 100 agents: +5 % of
  SUMO's instructions for the whole episode).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import traci.constants as tc

from cosim.errors import CommandRejected, CosimError, SumoFault
from scenarios import Scenario, Trip, sumotools

_SIM_VARS = (
    tc.VAR_TIME,
    tc.VAR_DEPARTED_VEHICLES_IDS,
    tc.VAR_ARRIVED_VEHICLES_IDS,
    tc.VAR_TELEPORT_STARTING_VEHICLES_IDS,
)
_ROAD = tc.VAR_ROAD_ID
_POS = tc.VAR_LANEPOSITION
_SPEED = tc.VAR_SPEED
_AGENT_VARS = (_ROAD, _POS, _SPEED)
AGENT_ACCEL = 2.6  # m/s^2, set explicitly on the agent vType: the env's look-ahead bounds rely on it
AGENT_VTYPE = "agent"

# libsumo's hot calls as SWIG's C entry points (left) instead of libsumo's one-line Python wrappers
# (right): the env's hottest loops (every step; three reads per look at a vehicle) paid as much for the
# wrappers as for SUMO's answer. libsumo's own simulationStep also runs TraCI's step listeners, which
# the kernel never registers.
_LIBSUMO_CALLS = {
    "step": ("simulation_step", "simulation.step"),
    "time": ("simulation_getTime", "simulation.getTime"),
    "departed": ("simulation_getDepartedIDList", "simulation.getDepartedIDList"),
    "arrived": ("simulation_getArrivedIDList", "simulation.getArrivedIDList"),
    "teleported": ("simulation_getStartingTeleportIDList", "simulation.getStartingTeleportIDList"),
    "road": ("vehicle_getRoadID", "vehicle.getRoadID"),
    "pos": ("vehicle_getLanePosition", "vehicle.getLanePosition"),
    "speed": ("vehicle_getSpeed", "vehicle.getSpeed"),
    "tl_state": ("trafficlight_getRedYellowGreenState", "trafficlight.getRedYellowGreenState"),
    "tl_switch": ("trafficlight_getNextSwitch", "trafficlight.getNextSwitch"),
    "edge_ids": ("edge_getLastStepVehicleIDs", "edge.getLastStepVehicleIDs"),
    "edge_speed": ("edge_getLastStepMeanSpeed", "edge.getLastStepMeanSpeed"),
    "edge_occupancy": ("edge_getLastStepOccupancy", "edge.getLastStepOccupancy"),
}


def _libsumo_calls(libsumo) -> dict:
    """The direct calls where this libsumo build has them all, otherwise its public functions."""
    raw = getattr(libsumo, "_libsumo", None)
    if raw is not None and all(hasattr(raw, direct) for direct, _ in _LIBSUMO_CALLS.values()):
        return {k: getattr(raw, direct) for k, (direct, _) in _LIBSUMO_CALLS.items()}
    out = {}
    for k, (_, public) in _LIBSUMO_CALLS.items():
        domain, name = public.split(".")
        out[k] = getattr(getattr(libsumo, domain), name)
    return out


# libsumo holds a single simulation per process: remember which kernel has it.
_libsumo_owner: weakref.ref[SumoKernel] | None = None


def sumo_binary(name: str = "sumo") -> str:
    """The binary to launch, found where the builder finds its own (so a scenario runs on the SUMO that
    built it), with SUMO_HOME exported first for the SUMO that runs in or below this process."""
    sumotools.export_home()
    return sumotools.binary(name)


def _fault_types() -> tuple[type[BaseException], ...]:
    import traci.exceptions as te

    kinds: list[type[BaseException]] = [te.FatalTraCIError, te.TraCIException, ConnectionError, BrokenPipeError]
    try:
        import libsumo

        kinds += [libsumo.TraCIException, libsumo.FatalTraCIError]
    except ImportError:  # pragma: no cover - libsumo is a hard dependency, but TraCI alone still works
        pass
    return tuple(kinds)


FAULTS = _fault_types()


def _rejection_types() -> tuple[type[BaseException], ...]:
    """The exceptions by which SUMO refuses a command and stays alive (everything else in FAULTS means
    the simulation is gone)."""
    import traci.exceptions as te

    kinds: list[type[BaseException]] = [te.TraCIException]
    try:
        import libsumo

        kinds.append(libsumo.TraCIException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(kinds)


REJECTIONS = _rejection_types()


def write_agent_routes(
    path: Path,
    trips: Sequence[Trip],
    routes: Sequence[Sequence[str]],
    rerouting: float | None = None,
    passive: Sequence[tuple[float, str]] = (),
) -> Path:
    """Agents as a SUMO route file: the same file feeds the env and the bare-SUMO benchmark, so both see
    identical vehicles (same type, departure, initial free-flow route). With `rerouting` (a period in s;
    0: route once, at insertion), the agents are trips that carry SUMO's own travel-time rerouting device
    instead of being steered by a policy; the period is a parameter of each agent, so no background
    vehicle re-routes because of it. `passive`:
    (departure, XML) of imported vehicles that could have been agents but are not this time; they run as
    their files say, in the same file because SUMO wants each file sorted by departure."""
    if rerouting is None:
        rows = [
            (
                t.depart,
                f'  <vehicle id="{t.id}" type="{AGENT_VTYPE}" depart="{t.depart:.2f}" departLane="best">'
                f'<route edges="{" ".join(edges)}"/></vehicle>',
            )
            for t, edges in zip(trips, routes)
        ]
    else:  # trips: the device routes them at insertion on its current edge times, as in a plain SUMO run
        rows = [
            (
                t.depart,
                f'  <trip id="{t.id}" type="{AGENT_VTYPE}" depart="{t.depart:.2f}" departLane="best" '
                f'from="{t.origin}" to="{t.destination}"><param key="has.rerouting.device" value="true"/>'
                f'<param key="device.rerouting.period" value="{rerouting:g}"/></trip>',
            )
            for t in trips
        ]
    rows += [(depart, "  " + xml) for depart, xml in passive]
    rows.sort(key=lambda r: r[0])  # stable: equal departures keep the pool's order
    lines = ["<routes>", f'  <vType id="{AGENT_VTYPE}" vClass="passenger" accel="{AGENT_ACCEL}" color="1,0,0"/>']
    lines += [xml for _, xml in rows]
    lines.append("</routes>\n")
    path.write_text("\n".join(lines))
    return path


class StepEvents(NamedTuple):
    """What one simulation step brought for the agents (the env reads nothing else per step)."""

    time: float
    departed: Sequence[str]
    arrived: Sequence[str]
    teleported: Sequence[str]
    n_arrived_all: int  # all vehicles, background included
    n_teleported_all: int
    n_departed_all: int = 0


_NONE: tuple[str, ...] = ()


class SumoKernel:
    """One SUMO simulation, started once and reloaded between episodes."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        backend: str = "libsumo",
        gui: bool = False,
        label: str | None = None,
        sumo_args: Sequence[str] = (),
    ) -> None:
        if backend not in ("libsumo", "traci"):
            raise CosimError(f"unknown backend {backend!r} (choose libsumo or traci)")
        if gui:
            if backend != "traci":
                backend = "traci"  # sumo-gui only runs as a separate process
            if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
                raise CosimError("--gui needs a display, but neither DISPLAY nor WAYLAND_DISPLAY is set")
        self.scenario = scenario
        self.backend = backend
        self.gui = gui
        self.label = label or f"cosim-{id(self):x}"
        self.extra_args = list(sumo_args)
        self.conn = None  # libsumo module or a traci Connection
        self._proc = None  # the SUMO child process (TraCI)
        self.faults = 0
        self.sumo_seconds = 0.0  # wall time inside SUMO, counted once count_sumo_time() was called
        self.workdir = Path(tempfile.mkdtemp(prefix="cosim-kernel-"))
        self._agents: frozenset[str] = frozenset()
        self._fast: dict | None = None  # libsumo: its hot calls, direct (see _LIBSUMO_CALLS)

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self.conn is not None

    @property
    def in_process(self) -> bool:
        """True for libsumo, where an extra query is a C++ call; over TraCI each one is a socket round
        trip, so the env asks only what the subscriptions already bring."""
        return self.backend == "libsumo"

    # the methods that call into SUMO, timed by count_sumo_time()
    SUMO_CALLS = ("start", "step", "positions", "edge_traffic", "occupancies", "mean_speeds", "set_route",
                  "speed_factor", "trip_statistics")  # fmt: skip

    def count_sumo_time(self) -> None:
        """From now on add the wall time of every call into SUMO to `sumo_seconds` (the training rows'
        time split). Off by default: timing costs two clock reads per call, which the overhead benchmark
        would count as the env's."""
        if getattr(self, "_counting", False):
            return
        self._counting = True
        clock = time.perf_counter

        def timed(fn):
            def call(*args, **kwargs):
                t0 = clock()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.sumo_seconds += clock() - t0

            return call

        for name in self.SUMO_CALLS:
            setattr(self, name, timed(getattr(self, name)))

    def sumo_options(
        self, seed: int, route_files: Sequence[Path], end: float, tripinfo: Path | None = None
    ) -> list[str]:
        """SUMO's command-line options (without the binary) for one episode of this scenario, as the kernel
        starts it: a bare `sumo` run with them sees the same simulation (the overhead benchmark's yardstick)."""
        args = [
            "-c",
            str(self.scenario.sumocfg),
            "-r",
            ",".join(str(p) for p in route_files),
            "--seed",
            str(int(seed)),
            "--begin",
            f"{self.scenario.begin:g}",
            "--end",
            f"{end:g}",
            "--no-step-log",
            "true",
            "--no-warnings",
            "true",
            # tripinfo devices on every vehicle make SUMO keep the all-vehicle trip statistics that
            # trip_statistics() reads; writing them to a null file keeps SUMO quiet (unlike
            # --duration-log.statistics, which turns on verbose output).
            "--tripinfo-output",
            str(tripinfo) if tripinfo is not None else os.devnull,
        ]
        kept = self.scenario.manifest.get("import", {}).get("sumo_options", {})
        if "time-to-teleport" not in kept:  # an imported .sumocfg's own setting wins
            args += ["--time-to-teleport", "300"]
        if self.gui:
            args += ["--start", "true", "--quit-on-end", "true"]
        return args + self.extra_args

    def start(
        self,
        seed: int,
        trips: Sequence[Trip],
        routes: Sequence[Sequence[str]],
        end: float,
        tripinfo: Path | None = None,
        rerouting: tuple[float, int, float] | None = None,
    ) -> None:
        """Begin an episode: reload the running SUMO when possible, otherwise start a fresh one.
        `rerouting` = (period s, adaptation steps, adaptation interval s) of SUMO's device on the agents."""
        passive = self.scenario.passive_vehicles(trips)
        period = rerouting[0] if rerouting is not None else None
        route_file = write_agent_routes(self.workdir / "agents.rou.xml", trips, routes, period, passive)
        args = self.sumo_options(seed, [self.scenario.background_file, route_file], end, tripinfo)
        if rerouting is not None:
            steps, interval = rerouting[1], rerouting[2]
            args += ["--device.rerouting.adaptation-steps", str(steps), "--device.rerouting.adaptation-interval",
                     f"{interval:g}"]  # fmt: skip
        self._agents = frozenset(t.id for t in trips)
        if self.conn is not None:
            try:
                self.conn.load(args)
            except FAULTS:
                self.faults += 1
                self._drop()
        if self.conn is None:
            self._launch(args)
        if self._fast is not None:
            return  # libsumo: step() reads the step's events with direct calls, no subscription
        try:
            self.conn.simulation.subscribe(_SIM_VARS)
        except FAULTS as exc:
            self._drop()
            raise SumoFault(f"SUMO failed right after start: {exc}") from exc

    def _launch(self, args: list[str]) -> None:
        global _libsumo_owner
        if self.backend == "libsumo":
            import libsumo

            owner = _libsumo_owner() if _libsumo_owner else None
            if owner is not None and owner is not self and owner.running:
                raise CosimError(
                    "libsumo runs one simulation per process and another environment holds it; "
                    "close it first or use backend='traci' for several simulations in one process"
                )
            try:
                libsumo.start([sumo_binary("sumo")] + args)
            except FAULTS as exc:
                raise SumoFault(f"SUMO could not start: {exc}") from exc
            _libsumo_owner = weakref.ref(self)
            self.conn = libsumo
            self._fast = _libsumo_calls(libsumo)
        else:
            import contextlib
            import subprocess
            import sys

            import sumolib
            import traci.main

            binary = sumo_binary("sumo-gui" if self.gui else "sumo")
            port = sumolib.miscutils.getFreeSocketPort()
            try:
                self._proc = subprocess.Popen(
                    [binary, *args, "--remote-port", str(port)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                # a private connection (not traci's global registry): several kernels coexist freely;
                # traci prints its connection retries, which must not reach our stdout
                with contextlib.redirect_stdout(sys.stderr):
                    self.conn = traci.main.connect(
                        port, numRetries=200, proc=self._proc, waitBetweenRetries=0.05, label=self.label
                    )
            except FAULTS + (OSError,) as exc:
                err = ""
                if self._proc is not None and self._proc.poll() is not None and self._proc.stderr:
                    err = self._proc.stderr.read().decode(errors="replace").strip()[-300:]
                self._kill_proc()
                raise SumoFault(f"SUMO could not start: {exc} {err}".strip()) from exc

    def _drop(self) -> None:
        """Forget a simulation that failed; never raises."""
        conn, self.conn = self.conn, None
        self._fast = None
        if conn is not None:
            try:
                conn.close(False) if self.backend == "traci" else conn.close()
            except Exception:  # noqa: BLE001 - the simulation is already broken; closing is best effort
                pass
        self._kill_proc()

    def _kill_proc(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def fault(self) -> None:
        """Record a SUMO fault: the simulation is dropped; the next start() launches a fresh one."""
        self.faults += 1
        self._drop()

    def suspend(self) -> None:
        """End the running SUMO and keep the rest: the next start() launches a fresh one (another city's
        env needs the process's one libsumo simulation meanwhile)."""
        self._drop()

    def close(self) -> None:
        self._drop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __del__(self) -> None:  # best effort: free SUMO and the temp folder
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------------ stepping
    def step(self) -> StepEvents:
        fast = self._fast
        try:
            if fast is not None:
                fast["step"](0.0)
                t, dep, arr, tel = fast["time"](), fast["departed"](), fast["arrived"](), fast["teleported"]()
            else:
                self.conn.simulationStep()
                res = self.conn.simulation.getSubscriptionResults()
                t = res[tc.VAR_TIME]
                dep = res[tc.VAR_DEPARTED_VEHICLES_IDS]
                arr = res[tc.VAR_ARRIVED_VEHICLES_IDS]
                tel = res[tc.VAR_TELEPORT_STARTING_VEHICLES_IDS]
        except FAULTS as exc:
            raise SumoFault(str(exc) or type(exc).__name__) from exc
        except AttributeError as exc:  # conn is None: stepping a dropped simulation
            raise SumoFault("no SUMO simulation is running") from exc
        if not (dep or arr or tel):  # most steps
            return StepEvents(t, _NONE, _NONE, _NONE, 0, 0)
        agents = self._agents
        departed = [v for v in dep if v in agents] if dep else _NONE
        if departed and self.backend == "traci":
            try:
                for v in departed:
                    self.conn.vehicle.subscribe(v, _AGENT_VARS)
            except FAULTS as exc:
                raise SumoFault(str(exc)) from exc
        return StepEvents(
            t,
            departed,
            [v for v in arr if v in agents] if arr else _NONE,
            [v for v in tel if v in agents] if tel else _NONE,
            len(arr),
            len(tel),
            len(dep),
        )

    # ------------------------------------------------------------------ per-agent access
    def positions(self, vids) -> list[tuple[str, float, float]]:
        """(road, metres along it, speed) for several agents in one call: the env's hot loop over agents
        near a decision. road is the edge id (":…" for a junction-internal edge), "" when the vehicle
        is not in the network (teleporting)."""
        try:
            fast = self._fast
            if fast is not None:
                road_of, pos_of, speed_of = fast["road"], fast["pos"], fast["speed"]
                return [(road_of(v), pos_of(v), speed_of(v)) for v in vids]
            get = self.conn.vehicle.getSubscriptionResults
            out = []
            for v in vids:
                r = get(v)
                out.append((r[_ROAD], r[_POS], r[_SPEED]) if r else ("", 0.0, 0.0))
            return out
        except FAULTS as exc:
            raise SumoFault(str(exc)) from exc

    def red_until(self, tls: str, links: Sequence[int]) -> float | None:
        """If every one of the traffic light's `links` shows red (or red-yellow) now: the time of its next
        switch, before which no vehicle standing in front of them can pass. Otherwise None."""
        fast = self._fast
        try:
            if fast is not None:
                state_of, switch_of = fast["tl_state"], fast["tl_switch"]
            else:
                tl = self.conn.trafficlight
                state_of, switch_of = tl.getRedYellowGreenState, tl.getNextSwitch
            state = state_of(tls)
            if all(state[i] in "ru" for i in links):
                return switch_of(tls)
        except FAULTS as exc:
            raise SumoFault(str(exc)) from exc
        return None

    def set_route(self, vid: str, edges: Sequence[str]) -> None:
        """Replace the vehicle's route. SUMO refusing it (CommandRejected) leaves the old route in place."""
        try:
            self.conn.vehicle.setRoute(vid, edges)
        except REJECTIONS as exc:
            raise CommandRejected(f"setRoute({vid}) refused by SUMO: {exc}") from exc
        except FAULTS as exc:
            raise SumoFault(f"setRoute({vid}) failed: {exc}") from exc

    def speed_factor(self, vid: str) -> float:
        try:
            return float(self.conn.vehicle.getSpeedFactor(vid))
        except FAULTS as exc:
            raise SumoFault(str(exc)) from exc

    def edge_traffic(self, edge: str) -> tuple[float, float, tuple[str, ...]]:
        """(mean speed m/s, occupancy 0..1, vehicle ids) of an edge in the last step."""
        fast = self._fast
        try:
            if fast is not None:
                ids_of, speed_of, occ_of = fast["edge_ids"], fast["edge_speed"], fast["edge_occupancy"]
            else:
                e = self.conn.edge
                ids_of, speed_of, occ_of = e.getLastStepVehicleIDs, e.getLastStepMeanSpeed, e.getLastStepOccupancy
            ids = ids_of(edge)
            if not ids:
                return -1.0, 0.0, ()
            return speed_of(edge), occ_of(edge) / 100.0, ids
        except FAULTS as exc:
            raise SumoFault(str(exc)) from exc

    def mean_speeds(self, edges: Sequence[str]) -> list[float]:
        """Every listed edge's mean speed in the last step (m/s; SUMO gives the speed limit where the edge
        is empty): the live-traffic sample, read in bulk every few simulated seconds, never per decision."""
        fast = self._fast
        get = fast["edge_speed"] if fast is not None else self.conn.edge.getLastStepMeanSpeed
        try:
            return [get(x) for x in edges]
        except FAULTS as exc:
            raise SumoFault(str(exc)) from exc

    def occupancies(self, edges: Sequence[str]) -> list[float]:
        get = self.conn.edge.getLastStepOccupancy
        try:
            return [get(x) / 100.0 for x in edges]
        except FAULTS as exc:
            raise SumoFault(str(exc)) from exc

    def trip_statistics(self) -> dict[str, float]:
        """SUMO's own aggregate over all vehicles that finished so far (kept by the tripinfo devices)."""
        out = {}
        try:
            for key in ("count", "duration", "timeLoss", "routeLength", "waitingTime"):
                out[key] = float(self.conn.simulation.getParameter("", f"device.tripinfo.{key}"))
            out["teleports"] = float(self.conn.simulation.getParameter("", "stats.teleports.total"))
        except FAULTS:
            pass
        except ValueError:
            pass
        return out

    def time(self) -> float:
        return self.conn.simulation.getTime()

    def process_pid(self) -> int | None:
        """PID of the SUMO child process (TraCI only); tests kill it to check fault recovery."""
        return self._proc.pid if self._proc is not None else None
