"""The plan format the LLM must answer in, and the validator that turns any answer into usable routes.

The answer is compact: ``{"routes": [2, 0, 1]}``, one candidate route number per agent in the order the
prompt lists the agents, with optional short ``reasons`` in the same order. Every token a model writes
costs it a forward pass: the earlier per-agent form with reasons took the local model ~160 generated
tokens per 6-agent prompt, this one 20. That longer form, ``{"choices": [{"agent": …, "route": …,
"edges": […]}]}``, is still understood: capable models may give an explicit list of edge ids there.
Whatever comes back — invalid JSON, an empty string, unknown or missing agents, too few or too many
route numbers, out-of-range numbers, invented edges, routes that are disconnected or end elsewhere —
is caught here, recorded with its reason, and repaired (the agent falls back to its free-flow route,
candidate 0). Nothing the model writes is ever executed: it is parsed as data against a pydantic schema.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from langchain_core.exceptions import OutputParserException
from langchain_core.output_parsers import PydanticOutputParser
from pydantic import BaseModel, Field

from scenarios.roadgraph import RoadGraph


class AgentChoice(BaseModel):
    agent: str = Field(description="the agent id, exactly as given")
    route: int = Field(description="number of the chosen candidate route")
    edges: list[str] | None = Field(default=None, description="optional explicit route (edge ids)")
    reason: str = Field(default="", description="one short sentence")


class CompactPlan(BaseModel):
    """The form the prompt asks for (its schema is the format instructions of backends without a grammar)."""

    routes: list[int] = Field(description="one route number per agent, in the order the agents are listed")
    reasons: list[str] | None = Field(default=None, description="optional: a few words per agent, same order")


class Plan(BaseModel):
    """Any answer the validator understands: the compact form, or the per-agent ``choices`` form."""

    routes: list[int] | None = None
    reasons: list[str] | None = None
    choices: list[AgentChoice] | None = None


PARSER = PydanticOutputParser(pydantic_object=CompactPlan)


def plan_schema(n_agents: int, n_routes: int) -> dict:
    """JSON schema for one subset's answer, in the subset of JSON Schema that llama.cpp turns into a
    grammar: a tuple of exactly one route number per agent, each from an enum. A grammar-constrained
    backend (the local model) cannot leave it; it depends only on the two sizes, so its grammar is
    built once and shared by every prompt of that shape."""
    return {
        "type": "object",
        "properties": {
            "routes": {"type": "array", "prefixItems": [{"enum": list(range(max(n_routes, 1)))}] * n_agents}
        },
        "required": ["routes"],
    }


@dataclass
class Validation:
    routes: dict[str, list[str]]  # agent -> edge ids, every agent of the subset
    choice: dict[str, int]  # agent -> candidate index (-1 = an explicit route of its own)
    reasons: dict[str, str]
    problems: list[str] = field(default_factory=list)  # what was wrong, one line each
    repaired: list[str] = field(default_factory=list)  # agents that fell back to their free-flow route

    @property
    def valid(self) -> bool:
        return not self.problems


def parse(text: str) -> Plan:
    """Parse an answer (either form); raises OutputParserException with the reason."""
    if not text or not text.strip():
        raise OutputParserException("empty answer")
    try:
        data = json.loads(text)
    except ValueError:
        # models like to wrap JSON in prose or code fences: take the outermost object
        m = re.search(r"\{.*\}", text, re.S)
        if m is None:
            raise OutputParserException(f"unparseable answer: no JSON object in {text[:80]!r}") from None
        try:
            data = json.loads(m.group(0))
        except ValueError as exc:
            raise OutputParserException(f"invalid plan JSON: {str(exc)[:200]}") from None
    try:
        plan = Plan.model_validate(data)
    except (ValueError, TypeError) as exc:
        raise OutputParserException(f"invalid plan JSON: {str(exc)[:200]}") from None
    if plan.routes is None and plan.choices is None:
        raise OutputParserException('invalid plan JSON: neither "routes" nor "choices" in the answer')
    return plan


def check_route(graph: RoadGraph, edges: list[str], origin: str, dest: str) -> str | None:
    """Why an explicit route is unusable, or None if it is a connected origin -> destination path."""
    if not edges:
        return "empty route"
    unknown = [e for e in edges if e not in graph.index]
    if unknown:
        return f"unknown edges {unknown[:3]}"
    if edges[0] != origin:
        return f"starts at {edges[0]}, not at the origin {origin}"
    if edges[-1] != dest:
        return f"ends at {edges[-1]}, not at the destination {dest}"
    for a, b in zip(edges, edges[1:]):
        if graph.index[b] not in graph.succ[graph.index[a]]:
            return f"{a} -> {b} is not a connection"
    return None


def validate(
    plan: Plan | None,
    candidates: dict[str, list[list[str]]],
    graph: RoadGraph,
    trips: dict[str, tuple[str, str]],
    error: str | None = None,
) -> Validation:
    """Routes for every agent of a subset from a parsed plan (or None when parsing failed: `error`).
    `candidates` lists the agents in the order of the prompt (the order of a compact answer)."""
    v = Validation(routes={}, choice={}, reasons={})
    if plan is None:
        v.problems.append(f"unparseable answer: {error}")
    seen: set[str] = set()
    if plan is not None and plan.routes is not None:
        agents = list(candidates)
        if len(plan.routes) != len(agents):
            v.problems.append(f"{len(plan.routes)} route numbers for {len(agents)} agents")
        reasons = plan.reasons or []
        for i, (agent, r) in enumerate(zip(agents, plan.routes)):
            seen.add(agent)
            routes = candidates[agent]
            if not 0 <= r < len(routes):
                v.problems.append(f"agent {agent}: route {r} out of range 0..{len(routes) - 1}")
                continue
            v.routes[agent] = routes[r]
            v.choice[agent] = r
            v.reasons[agent] = str(reasons[i])[:200] if i < len(reasons) else ""
    for c in plan.choices if plan and plan.routes is None and plan.choices else []:
        if c.agent not in candidates:
            v.problems.append(f"unknown agent id {c.agent!r}")
            continue
        if c.agent in seen:
            v.problems.append(f"agent {c.agent} answered twice")
            continue
        seen.add(c.agent)
        routes = candidates[c.agent]
        if c.edges:
            why = check_route(graph, c.edges, *trips[c.agent])
            if why is None:
                v.routes[c.agent] = list(c.edges)
                v.choice[c.agent] = next((i for i, r in enumerate(routes) if r == c.edges), -1)
                v.reasons[c.agent] = c.reason[:200]
                continue
            v.problems.append(f"agent {c.agent}: explicit route rejected ({why})")
            continue
        if not 0 <= c.route < len(routes):
            v.problems.append(f"agent {c.agent}: route {c.route} out of range 0..{len(routes) - 1}")
            continue
        v.routes[c.agent] = routes[c.route]
        v.choice[c.agent] = c.route
        v.reasons[c.agent] = c.reason[:200]
    for agent, routes in candidates.items():
        if agent not in v.routes:
            if plan is not None and agent not in seen:
                v.problems.append(f"agent {agent} missing from the answer")
            v.routes[agent] = routes[0]
            v.choice[agent] = 0
            v.reasons[agent] = "(repaired: free-flow route)"
            v.repaired.append(agent)
    return v
