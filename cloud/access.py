"""Roles, the caller (`Principal`) and what each role may see and do, by jurisdiction.

Pure rules: the routes ask these before touching the database, and the database
queries take the same unit prefix, so a list, a search, an export and a get by id all
answer from one definition of "inside my unit".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cloud.errors import NotFound
from cloud.tiers import Level, is_within


class Role(StrEnum):
    COUNTY_ADMIN = "county_admin"
    COUNTY_OPERATOR = "county_operator"
    TOWN_OPERATOR = "town_operator"
    VILLAGE_OPERATOR = "village_operator"
    GRID_WORKER = "grid_worker"
    DEPARTMENT_OFFICER = "department_officer"
    FIELD_TECHNICIAN = "field_technician"
    AUDITOR = "auditor"
    INTEGRATION = "integration"


class Permission(StrEnum):
    READ_EVENTS = "read_events"
    READ_FLEET = "read_fleet"
    READ_CASES = "read_cases"
    HANDLE_CASES = "handle_cases"  # acknowledge, note, resolve
    MANAGE_CASES = "manage_cases"  # triage, dispatch, approve, close, open by hand
    REPORT_CASES = "report_cases"  # a grid worker's "must report" duties
    READ_AUDIT = "read_audit"
    MANAGE_ORG = "manage_org"  # the tree, people, tokens
    OPERATE_INGEST = "operate_ingest"  # dead letters, gaps
    OPERATE_FLEET = "operate_fleet"  # commands to nodes, their desired config
    SET_CASE_RULES = "set_case_rules"  # the county's case rules (only the county admin)


_OPERATOR = frozenset(
    {
        Permission.READ_EVENTS,
        Permission.READ_FLEET,
        Permission.READ_CASES,
        Permission.HANDLE_CASES,
        Permission.MANAGE_CASES,
        Permission.REPORT_CASES,
    }
)

PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.COUNTY_ADMIN: frozenset(Permission),
    Role.COUNTY_OPERATOR: _OPERATOR | {Permission.OPERATE_INGEST, Permission.OPERATE_FLEET},
    Role.TOWN_OPERATOR: _OPERATOR | {Permission.OPERATE_FLEET},
    Role.VILLAGE_OPERATOR: _OPERATOR,
    Role.GRID_WORKER: frozenset(
        {
            Permission.READ_EVENTS,
            Permission.READ_CASES,
            Permission.HANDLE_CASES,
            Permission.REPORT_CASES,
        }
    ),
    Role.DEPARTMENT_OFFICER: frozenset({Permission.READ_CASES, Permission.HANDLE_CASES}),
    Role.FIELD_TECHNICIAN: frozenset(
        {
            Permission.READ_FLEET,
            Permission.OPERATE_FLEET,
            Permission.READ_CASES,
            Permission.HANDLE_CASES,
        }
    ),
    Role.AUDITOR: frozenset(
        {
            Permission.READ_EVENTS,
            Permission.READ_FLEET,
            Permission.READ_CASES,
            Permission.READ_AUDIT,
        }
    ),
    Role.INTEGRATION: frozenset(
        {Permission.READ_EVENTS, Permission.READ_CASES, Permission.REPORT_CASES}
    ),
}

# The levels a role's unit may be at: a town operator sits at a town, and so on.
ROLE_LEVELS: dict[Role, frozenset[Level]] = {
    Role.COUNTY_ADMIN: frozenset({Level.COUNTY}),
    Role.COUNTY_OPERATOR: frozenset({Level.COUNTY}),
    Role.TOWN_OPERATOR: frozenset({Level.TOWN}),
    Role.VILLAGE_OPERATOR: frozenset({Level.VILLAGE}),
    Role.GRID_WORKER: frozenset({Level.GRID}),
    Role.DEPARTMENT_OFFICER: frozenset({Level.COUNTY, Level.TOWN}),
    Role.FIELD_TECHNICIAN: frozenset({Level.COUNTY, Level.TOWN}),
    Role.AUDITOR: frozenset(Level),
    Role.INTEGRATION: frozenset(Level),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a signed-in person or an API token."""

    subject: str  # a username, or "token:<name>"
    role: Role
    unit_code: str
    level: Level
    department_code: str | None = None
    remote_addr: str = ""

    def can(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]

    def covers(self, unit_code: str) -> bool:
        """Whether a unit (or something in it) lies inside this caller's jurisdiction. The
        county sees everything, also what no unit claims yet (an unassigned camera)."""
        return self.level is Level.COUNTY or is_within(unit_code, self.unit_code)

    def scope(self, unit_code: str | None) -> str | None:
        """The unit a query may cover: the asked unit when inside the caller's, the caller's
        own when the ask is wider, None (no limit) for the county asking for everything.
        Raises NotFound for a unit outside, as if it did not exist."""
        if unit_code is None:
            return None if self.level is Level.COUNTY else self.unit_code
        if is_within(unit_code, self.unit_code):
            return unit_code
        if is_within(self.unit_code, unit_code):
            return self.unit_code
        if self.level is Level.COUNTY:
            return unit_code  # a unit of another county: nothing there, an empty answer
        raise NotFound("unit not found")

    @property
    def sees_only_dispatched(self) -> bool:
        """Department officers see what was dispatched to their department, nothing else."""
        return self.role is Role.DEPARTMENT_OFFICER

    @property
    def sees_only_work_orders(self) -> bool:
        """Technicians see the fleet's work orders, not residents' cases."""
        return self.role is Role.FIELD_TECHNICIAN
