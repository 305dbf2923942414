"""The migration controller's decisions (MC-F1, MC-F2, MC-S1, MC-S3, MC-S4; DESIGN.md section 6).

Pure code: where a vTM may go and why other hosts are refused (`choose_destination`,
`plan_evacuation`, `hosts_to_evacuate`), and the signed instructions engines accept
(`sign_migration_task`, `verify_migration_task`, the controller's certificate). The controller
service in `vroot server` reads the fleet from the store and drives the engines with these.
"""

from vroot.controller._files import ControllerKeys, load_or_create_controller_keys
from vroot.controller._machine import (
    Checks,
    Migration,
    MigrationState,
    Step,
    TaskSpec,
    on_deadline,
    on_result,
    start,
    target_qualifying_data,
    tasks_for,
)
from vroot.controller._placement import (
    REFUSAL_CODES,
    EvacuationPlan,
    HostView,
    MigrationRules,
    Placement,
    Refusal,
    choose_destination,
    hosts_to_evacuate,
    plan_evacuation,
)
from vroot.controller._tasks import (
    MIGRATION_TASK_KINDS,
    TASK_TYP,
    VerifiedController,
    VerifiedMigrationTask,
    issue_controller_certificate,
    sign_migration_task,
    verify_controller_certificate,
    verify_migration_task,
)

__all__ = [
    "Checks",
    "ControllerKeys",
    "EvacuationPlan",
    "HostView",
    "MIGRATION_TASK_KINDS",
    "Migration",
    "MigrationRules",
    "MigrationState",
    "Placement",
    "REFUSAL_CODES",
    "Refusal",
    "Step",
    "TASK_TYP",
    "TaskSpec",
    "VerifiedController",
    "VerifiedMigrationTask",
    "choose_destination",
    "hosts_to_evacuate",
    "issue_controller_certificate",
    "load_or_create_controller_keys",
    "on_deadline",
    "on_result",
    "plan_evacuation",
    "sign_migration_task",
    "start",
    "target_qualifying_data",
    "tasks_for",
    "verify_controller_certificate",
    "verify_migration_task",
]
