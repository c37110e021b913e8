"""Per-space settings, published on compacted topics by the operators' admin."""

from __future__ import annotations

from pydantic import field_validator

from models.base import ContractModel, Id, Timestamp
from models.moments import zone


class SignupSetting(ContractModel):
    space_id: Id
    keep_new_members_suspended: bool
    updated_at: Timestamp


class PlanSetting(ContractModel):
    space_id: Id
    plan_id: Id
    suspend_on_join: bool
    updated_at: Timestamp


class CrmStageSetting(ContractModel):
    space_id: Id
    board_id: Id
    stage_id: Id
    deactivate_account: bool
    updated_at: Timestamp

    @property
    def stage_key(self) -> str:
        return f"{self.board_id}/{self.stage_id}"


class SpaceSetting(ContractModel):
    """(addition) A space's own time zone, in which operators' local dates and times are read."""

    space_id: Id
    time_zone: Id  # an IANA name, e.g. Europe/London; an unknown zone is bad input
    updated_at: Timestamp

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        zone(name)  # raises MomentError (a ValueError) naming the zone
        return name
