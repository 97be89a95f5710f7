"""Every permission the dashboard checks, as ``"app_label.codename"``.

The models' ``Meta.permissions`` declare them (and migrations create them); views,
consumers, API routers and services use these names, never the strings.
"""

from __future__ import annotations

VIEW_DASHBOARD = "dashboard.view_dashboard"  # every page, socket and API read
RESET_METRICS = "dashboard.reset_metrics"
RESET_BREAKER = "breakers.reset_breaker"
OPERATE_BREAKER = "breakers.operate_breaker"  # force open, disable
DELETE_CHECKPOINT = "checkpoints.delete_checkpoint"
EXECUTE_WORKFLOW = "workflows.execute_workflow"
OPERATE_SIMULATION = "workflows.operate_simulation"
RESUME_CHECKPOINT = "checkpoints.resume_checkpoint"  # re-run a workflow from a checkpoint
FORK_CHECKPOINT = "checkpoints.fork_checkpoint"  # copy a checkpoint into a new workflow
REPORT_FLEET = "fleet.report_fleet"  # a worker process's reports (resilience.fleet)
