"""Per-space settings, published on compacted topics by the operators' admin."""

from __future__ import annotations

from models.base import ContractModel, Id, Timestamp


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
