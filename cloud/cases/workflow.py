"""The closed loop as a state machine: which action moves a case from which state to which.

受理 intake → 研判 triage → 分流 dispatch → 处置 handling → 督办 supervision → 反馈 feedback
→ 办结 closed. Actions are what people do; the service's own steps (open, merge,
escalate, remind) are written to the history too but are not requested through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cloud.access import Permission
from cloud.errors import Conflict
from protocols.enums import CaseState


class CaseAction(StrEnum):
    ACKNOWLEDGE = "acknowledge"  # intake → triage: someone has it; the ack timer stops
    CONFIRM = "confirm"  # triage → dispatch: it is real (category and severity set)
    DISMISS = "dismiss"  # intake/triage → closed: a false alarm, with the reason kept
    DISPATCH = "dispatch"  # dispatch/handling → handling: to a unit and/or departments
    RESOLVE = "resolve"  # handling: the caller's part is done; all parts done → supervision
    RETURN = "return"  # supervision → handling: not good enough, back to the handlers
    APPROVE = "approve"  # supervision → feedback: the supervisor accepts the handling
    CLOSE = "close"  # feedback → closed: with the reporter's or resident's satisfaction
    NOTE = "note"  # any open state: a note or photos, no change of state
    SUPERVISE = "supervise"  # any open state: raise the supervision level (督办), remind
    RECHECK = "recheck"  # handling to feedback: ask the camera's node to look again


class SystemAction(StrEnum):
    OPEN = "open"
    MERGE = "merge"
    ESCALATE = "escalate"
    REMIND = "remind"
    AUTO_CLOSE = "auto_close"


OPEN_STATES = frozenset(CaseState) - {CaseState.CLOSED}


@dataclass(frozen=True)
class Step:
    sources: frozenset[CaseState]
    target: CaseState | None  # None: the state does not change
    permission: Permission


STEPS: dict[CaseAction, Step] = {
    CaseAction.ACKNOWLEDGE: Step(
        frozenset({CaseState.INTAKE}), CaseState.TRIAGE, Permission.HANDLE_CASES
    ),
    CaseAction.CONFIRM: Step(
        frozenset({CaseState.TRIAGE}), CaseState.DISPATCH, Permission.MANAGE_CASES
    ),
    CaseAction.DISMISS: Step(
        frozenset({CaseState.INTAKE, CaseState.TRIAGE}), CaseState.CLOSED, Permission.MANAGE_CASES
    ),
    CaseAction.DISPATCH: Step(
        frozenset({CaseState.DISPATCH, CaseState.HANDLING}),
        CaseState.HANDLING,
        Permission.MANAGE_CASES,
    ),
    CaseAction.RESOLVE: Step(
        frozenset({CaseState.HANDLING}), CaseState.SUPERVISION, Permission.HANDLE_CASES
    ),
    CaseAction.RETURN: Step(
        frozenset({CaseState.SUPERVISION}), CaseState.HANDLING, Permission.MANAGE_CASES
    ),
    CaseAction.APPROVE: Step(
        frozenset({CaseState.SUPERVISION}), CaseState.FEEDBACK, Permission.MANAGE_CASES
    ),
    CaseAction.CLOSE: Step(
        frozenset({CaseState.FEEDBACK}), CaseState.CLOSED, Permission.MANAGE_CASES
    ),
    CaseAction.NOTE: Step(OPEN_STATES, None, Permission.HANDLE_CASES),
    CaseAction.SUPERVISE: Step(OPEN_STATES, None, Permission.MANAGE_CASES),
    CaseAction.RECHECK: Step(
        frozenset({CaseState.HANDLING, CaseState.SUPERVISION, CaseState.FEEDBACK}),
        None,
        Permission.MANAGE_CASES,
    ),
}


def check_step(action: CaseAction, state: CaseState) -> CaseState:
    """The state after `action`, or Conflict naming the action, the state and what fits."""
    step = STEPS[action]
    if state not in step.sources:
        allowed = ", ".join(sorted(a.value for a, s in STEPS.items() if state in s.sources))
        raise Conflict(
            f"cannot {action.value} a case in state {state.value}; "
            f"allowed now: {allowed or 'nothing (the case is closed)'}"
        )
    return state if step.target is None else step.target
