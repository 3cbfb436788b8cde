"""The county's case rules: which detections and reports open cases, where they start, their
deadlines. Everyone who works cases may read them; only the county admin sets them, as a
new version with a reason (the same `set_rules` as `gridwatch cloud rules set`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from cloud.access import Permission, Principal
from cloud.api.contract import refusals
from cloud.api.deps import CaseReader, Settings, require
from cloud.cases import rule_sets
from cloud.cases.rules import CaseRules
from cloud.database import connect
from cloud.errors import NotFound
from cloud.settings import CloudSettings
from protocols.base import Integer

router = APIRouter(tags=["case rules"])

RulesSetter = Annotated[Principal, Depends(require(Permission.SET_CASE_RULES))]


class RulesVersion(BaseModel):
    version: int
    set_by: str
    set_at: datetime
    reason: str


class RulesInForce(RulesVersion):
    rules: CaseRules


class RulesChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: CaseRules
    reason: str = Field(
        min_length=1, max_length=500, description="Why they change (kept with them, audited)."
    )
    based_on: Integer = Field(
        description="The version these rules were edited from; refused (409) when another "
        "version is in force by now, so that two admins do not undo each other.",
    )


def _in_force(settings: CloudSettings) -> RulesInForce:
    with connect(settings) as conn:
        found = rule_sets.current(conn)
    if found is None:
        raise NotFound("no case rules yet: `gridwatch cloud migrate` sets the first")
    number, rules, record = found
    return RulesInForce(version=number, rules=rules, **record)


@router.get(
    "/case-rules",
    response_model=RulesInForce,
    responses=refusals((404, "No rules in force yet (`gridwatch cloud migrate` sets the first).")),
)
async def get_rules(principal: CaseReader, settings: Settings) -> RulesInForce:
    """The rules in force, with their version and who set them, when and why."""
    return await run_in_threadpool(_in_force, settings)


@router.get("/case-rules/versions", response_model=list[RulesVersion])
async def list_versions(principal: CaseReader, settings: Settings) -> list[dict[str, Any]]:
    """Every change, newest first (the last 100)."""

    def read() -> list[dict[str, Any]]:
        with connect(settings) as conn:
            return rule_sets.versions(conn)

    return await run_in_threadpool(read)


@router.get("/case-rules/versions/{number}", response_model=CaseRules)
async def get_version(
    number: Annotated[int, Path(ge=1)], principal: CaseReader, settings: Settings
) -> CaseRules:
    """The rules as they were in one version (what a case opened then was held to)."""

    def read() -> CaseRules | None:
        with connect(settings) as conn:
            return rule_sets.version(conn, number)

    rules = await run_in_threadpool(read)
    if rules is None:
        raise NotFound(f"no case rules version {number}")
    return rules


@router.put(
    "/case-rules",
    response_model=RulesInForce,
    responses=refusals((409, "`based_on` is not the version in force: read the rules again.")),
)
async def put_rules(body: RulesChange, principal: RulesSetter, settings: Settings) -> RulesInForce:
    """Put new rules in force as the next version; every case opened or timed from now on
    follows them. Audited as `case_rules.set`."""

    def write() -> RulesInForce:
        with connect(settings) as conn:
            rule_sets.set_rules(
                conn, body.rules, principal=principal, reason=body.reason, based_on=body.based_on
            )
        return _in_force(settings)

    return await run_in_threadpool(write)
