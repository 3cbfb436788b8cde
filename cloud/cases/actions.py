"""What a person does to a case: check role, jurisdiction and state, change the case, and
write its history and the audit log in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from uuid6 import uuid7

from cloud.access import Permission, Principal
from cloud.cases.workflow import STEPS, CaseAction, check_step
from cloud.commands import make_command
from cloud.db import audit
from cloud.db import cases as db
from cloud.db import org as org_db
from cloud.db.alerts import LOCK_SQL
from cloud.errors import BadRequest, Forbidden, NotFound
from protocols import CommandRequest
from protocols.enums import CaseState, CommandName, Severity


@dataclass(frozen=True)
class ActionRequest:
    action: CaseAction
    comment: str | None = None
    category: str | None = None
    severity: Severity | None = None
    reason: str | None = None
    unit_code: str | None = None
    departments: tuple[str, ...] = ()
    satisfaction: int | None = None
    photos: tuple[UUID, ...] = field(default_factory=tuple)


def _require(value: Any, name: str, action: CaseAction) -> Any:
    if value in (None, "", ()):
        raise BadRequest(f"{name} is required to {action.value}")
    return value


@dataclass
class ActionResult:
    case: dict[str, Any]
    # Commands to nodes, to send once the transaction has committed (a recheck).
    commands: list[CommandRequest] = field(default_factory=list)


async def act(
    conn: AsyncConnection,
    principal: Principal,
    case_id: UUID,
    request: ActionRequest,
    *,
    now: datetime,
) -> ActionResult:
    """Apply one action; returns the case as it is afterwards."""
    step = STEPS[request.action]
    async with conn.transaction():
        await conn.execute(LOCK_SQL)  # before the case row: see cloud.db.alerts
        case = await db.get_case(conn, principal, case_id, for_update=True)
        if case is None:
            raise NotFound("case not found")
        if not principal.can(step.permission):
            raise Forbidden(f"a {principal.role.value} may not {request.action.value} cases")
        state = CaseState(case["state"])
        target = check_step(request.action, state)
        changes, detail = await _changes(conn, principal, case, request, now)
        commands: list[CommandRequest] = detail.pop("commands", [])
        if request.action is CaseAction.RESOLVE and not detail.pop("all_parts_done"):
            target = state  # joint handling: the others' parts are still open
        if target is not state:
            changes["state"] = target.value
        if changes:
            await db.update_case(conn, case_id, changes, at=now)
        if request.comment:
            detail["comment"] = request.comment
        if request.photos:
            await _check_photos(conn, case_id, request.photos)
            detail["photos"] = [str(p) for p in request.photos]
        await db.add_history(
            conn,
            case_id,
            at=now,
            actor=principal.subject,
            action=request.action.value,
            from_state=state.value,
            to_state=target.value,
            detail=detail,
        )
        await audit.record(
            conn,
            principal,
            f"case.{request.action.value}",
            target_type="case",
            target_id=str(case_id),
            unit_code=case["unit_code"],
            detail={"from_state": state.value, "to_state": target.value, **detail},
        )
        updated = await db.get_case(conn, principal, case_id)
    assert updated is not None
    return ActionResult(updated, commands)


async def _changes(
    conn: AsyncConnection,
    principal: Principal,
    case: dict[str, Any],
    request: ActionRequest,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The columns an action sets, and what its history entry records."""
    action = request.action
    case_id = case["case_id"]
    changes: dict[str, Any] = {}
    detail: dict[str, Any] = {}
    match action:
        case CaseAction.ACKNOWLEDGE:
            changes["acknowledged_at"] = now
            changes["ack_due_at"] = None
            changes["assignee"] = case["assignee"] or principal.subject
        case CaseAction.CONFIRM:
            if request.category is not None:
                changes["category"] = detail["category"] = request.category
            if request.severity is not None:
                changes["severity"] = detail["severity"] = request.severity.value
        case CaseAction.DISMISS:
            reason = _require(request.reason, "reason", action)
            changes |= {
                "false_alarm": True,
                "close_reason": reason,
                "closed_at": now,
                "ack_due_at": None,
                "acknowledged_at": case["acknowledged_at"] or now,
            }
            detail["reason"] = reason
        case CaseAction.DISPATCH:
            detail |= await _dispatch(conn, principal, case_id, request, now)
            changes["dispatched_at"] = case["dispatched_at"] or now
        case CaseAction.RESOLVE:
            detail |= await _resolve_parts(conn, principal, case_id, now)
            if detail["all_parts_done"]:
                changes["resolved_at"] = now
        case CaseAction.RETURN:
            _require(request.comment, "comment", action)
            await conn.execute(
                "UPDATE case_assignments SET resolved_at = NULL, resolved_by = NULL "
                "WHERE case_id = %s",
                (case_id,),
            )
            changes["resolved_at"] = None
        case CaseAction.APPROVE:
            # Closing a camera's case asks its node whether the situation is really gone.
            if case["source"] == "camera" and case["node_id"]:
                detail |= await _recheck(conn, principal, case, now, required=False)
        case CaseAction.RECHECK:
            detail |= await _recheck(conn, principal, case, now, required=True)
        case CaseAction.CLOSE:
            recheck = await _recheck_outcome(conn, case_id)
            if recheck in ("still_seen", "unanswered"):
                # The box still sees the situation, or has not said yet: closing anyway
                # needs a reason, kept in the history and the audit log.
                why = {
                    "still_seen": "the camera's re-check still sees it",
                    "unanswered": "the camera's re-check has not been answered yet",
                }[recheck]
                detail["reason"] = _require(request.reason, f"reason ({why})", action)
                detail[f"recheck_{recheck}"] = True
            if request.satisfaction is not None:
                changes["satisfaction"] = detail["satisfaction"] = request.satisfaction
            changes["closed_at"] = now
            # Why it closed, as every other closing says: the closer's words, or the loop's
            # (verified: approved, and the camera's re-check, if any, no longer sees it).
            changes["close_reason"] = request.reason or "resolved and verified"
        case CaseAction.NOTE:
            if not request.comment and not request.photos:
                raise BadRequest("comment or photos is required to note")
        case CaseAction.SUPERVISE:
            changes["supervision_level"] = case["supervision_level"] + 1
            detail["supervision_level"] = changes["supervision_level"]
    return changes, detail


async def _recheck_outcome(conn: AsyncConnection, case_id: UUID) -> str | None:
    """What the case's latest re-check says: `still_seen`, `clear`, `unanswered` (asked, and
    no answer, or the box could not look), or None when none was asked."""
    cur = await conn.execute(
        "SELECT r.status, (r.data->>'present')::boolean FROM case_checks k "
        "LEFT JOIN command_responses r ON r.request_id = k.request_id "
        "WHERE k.case_id = %s ORDER BY k.requested_at DESC, k.request_id DESC LIMIT 1",
        (case_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    status, present = row
    if status != "ok":
        return "unanswered"
    return "still_seen" if present else "clear"


async def _check_photos(conn: AsyncConnection, case_id: UUID, photos: tuple[UUID, ...]) -> None:
    cur = await conn.execute(
        "SELECT photo_id FROM case_photos WHERE case_id = %s AND photo_id = ANY(%s)",
        (case_id, list(photos)),
    )
    found = {row[0] for row in await cur.fetchall()}
    if missing := [str(p) for p in photos if p not in found]:
        raise BadRequest(f"photos: not uploaded to this case: {', '.join(missing)}")


async def _dispatch(
    conn: AsyncConnection,
    principal: Principal,
    case_id: UUID,
    request: ActionRequest,
    now: datetime,
) -> dict[str, Any]:
    if request.unit_code is None and not request.departments:
        raise BadRequest("unit_code or departments is required to dispatch")
    targets: list[tuple[str, str]] = []
    if request.unit_code is not None:
        unit = await org_db.unit(conn, request.unit_code)
        if unit is None or not principal.covers(request.unit_code):
            raise BadRequest(f"unit_code: no unit {request.unit_code} in your jurisdiction")
        targets.append(("unit", request.unit_code))
    for code in request.departments:
        if not await org_db.department_exists(conn, code):
            raise BadRequest(f"departments: unknown department {code}")
        targets.append(("department", code))
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO case_assignments (case_id, assignee_type, code, dispatched_at, "
            "dispatched_by) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (case_id, assignee_type, "
            "code) DO UPDATE SET resolved_at = NULL, resolved_by = NULL",
            [(case_id, kind, code, now, principal.subject) for kind, code in targets],
        )
    return {"unit_code": request.unit_code, "departments": list(request.departments)}


async def _resolve_parts(
    conn: AsyncConnection, principal: Principal, case_id: UUID, now: datetime
) -> dict[str, Any]:
    """Mark the caller's parts done: a department officer's department, or the units inside
    the caller's jurisdiction (all of them when the case was dispatched to no one)."""
    parts = await db.assignments(conn, case_id)
    if principal.sees_only_dispatched:
        mine = [
            p
            for p in parts
            if p["assignee_type"] == "department" and p["code"] == principal.department_code
        ]
    else:
        mine = [p for p in parts if p["assignee_type"] == "unit" and principal.covers(p["code"])]
    if parts and not mine:
        raise Forbidden("no part of this case is assigned to you")
    open_mine = [p for p in mine if p["resolved_at"] is None]
    async with conn.cursor() as cur:
        await cur.executemany(
            "UPDATE case_assignments SET resolved_at = %s, resolved_by = %s "
            "WHERE case_id = %s AND assignee_type = %s AND code = %s",
            [(now, principal.subject, case_id, p["assignee_type"], p["code"]) for p in open_mine],
        )
    done = {(p["assignee_type"], p["code"]) for p in mine}
    remaining = [
        f"{p['assignee_type']}:{p['code']}"
        for p in parts
        if p["resolved_at"] is None and (p["assignee_type"], p["code"]) not in done
    ]
    return {
        "parts": [f"{p['assignee_type']}:{p['code']}" for p in mine],
        "remaining": remaining,
        "all_parts_done": not remaining,
    }


async def _recheck(
    conn: AsyncConnection,
    principal: Principal,
    case: dict[str, Any],
    now: datetime,
    *,
    required: bool,
) -> dict[str, Any]:
    rule_id = None
    if case["source"] == "camera" and case["first_event_id"] is not None:
        cur = await conn.execute(
            "SELECT rule_id FROM events WHERE event_id = %s LIMIT 1", (case["first_event_id"],)
        )
        row = await cur.fetchone()
        rule_id = row[0] if row else None
    if rule_id is None:
        if required:
            raise BadRequest("only a case from a camera rule can be rechecked")
        return {}
    command = make_command(
        case["node_id"], CommandName.RECHECK_ZONE, camera_id=case["camera_id"], rule_id=rule_id
    )
    await conn.execute(
        "INSERT INTO case_checks (request_id, case_id, node_id, camera_id, rule_id, "
        "requested_at, requested_by) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            command.request_id,
            case["case_id"],
            case["node_id"],
            case["camera_id"],
            rule_id,
            now,
            principal.subject,
        ),
    )
    return {"recheck": str(command.request_id), "commands": [command]}


@dataclass(frozen=True)
class NewCase:
    category: str
    severity: Severity
    title: str
    unit_code: str
    description: str = ""
    location: dict[str, Any] | None = None


async def open_case(
    conn: AsyncConnection, principal: Principal, new: NewCase, *, now: datetime
) -> UUID:
    """A case from a grid worker's report or an operator: the same deadlines and tiers as
    one from a camera."""
    if not principal.can(Permission.REPORT_CASES):
        raise Forbidden(f"a {principal.role.value} may not open cases")
    unit = await org_db.unit(conn, new.unit_code)
    if unit is None or not principal.covers(new.unit_code):
        raise BadRequest(f"unit_code: no unit {new.unit_code} in your jurisdiction")
    rule = await db.rule_for(conn, new.category, new.severity.value)
    if rule is None:
        raise BadRequest(f"category: unknown category {new.category}")
    source = "report" if rule["source"] == "report" else "operator"
    responsible = await db.ancestor_at(conn, new.unit_code, rule["start_level"])
    case_id = uuid7()
    async with conn.transaction():
        await conn.execute(LOCK_SQL)
        await conn.execute(
            "INSERT INTO cases (case_id, source, category, severity, state, title, description, "
            "unit_code, responsible_unit_code, location, reporter, opened_at, ack_due_at, "
            "resolve_due_at) VALUES (%s, %s, %s, %s, 'intake', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                case_id,
                source,
                new.category,
                new.severity.value,
                new.title,
                new.description,
                new.unit_code,
                responsible,
                None if new.location is None else Jsonb(new.location),
                principal.subject,
                now,
                now + timedelta(seconds=rule["ack_s"]),
                now + timedelta(seconds=rule["resolve_s"]),
            ),
        )
        detail: dict[str, Any] = {"source": source, "responsible_unit_code": responsible}
        await db.add_history(
            conn,
            case_id,
            at=now,
            actor=principal.subject,
            action="open",
            from_state=None,
            to_state=CaseState.INTAKE.value,
            detail=detail,
        )
        await audit.record(
            conn,
            principal,
            "case.open",
            target_type="case",
            target_id=str(case_id),
            unit_code=new.unit_code,
            detail={"category": new.category, **detail},
        )
    return case_id
