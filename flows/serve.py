"""Server-side objects a kimidocs deployment wants besides the deployments: the zombie-run automation.

A worker that is SIGKILLed (OOM killer, reboot) cannot report its flow run, which then stays Running on
the server forever; open-source Prefect ships no automation for that. This creates the one from Prefect's
docs (detect-zombie-flows): no heartbeat and no terminal event within `within` after a heartbeat ->
the run is marked Crashed. Flow runs send a heartbeat every PREFECT_FLOWS_HEARTBEAT_FREQUENCY (180 s by
default), so `within` must be a few heartbeats long (540 s by default).
"""

from __future__ import annotations

from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture

ZOMBIE_AUTOMATION = "kimidocs-crash-zombie-flow-runs"


def ensure_zombie_automation(within_s: float = 540.0) -> bool:
    """Create the automation unless one with our name exists; True when it was created."""
    try:
        Automation.read(name=ZOMBIE_AUTOMATION)
        return False
    except ValueError:
        pass
    Automation(
        name=ZOMBIE_AUTOMATION,
        description="Mark flow runs Crashed when their heartbeats stop (worker killed).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED, message="Flow run marked as crashed due to missing heartbeats."
            )
        ],
    ).create()
    return True


def serve_deployments(deployments: list, *, limit: int | None = None) -> None:
    """Serve the given deployments from this process until SIGTERM (Prefect's `serve`)."""
    from prefect import serve

    serve(*deployments, limit=limit)
