"""Jobs: the model and state machine, the DynamoDB store, submission, fan-out and the
worker's per-message logic."""

from siprems.jobs.model import (
    ACTIVE,
    TERMINAL,
    ChildCounts,
    Job,
    JobError,
    JobStatus,
    JobType,
    can_transition,
)
from siprems.jobs.store import JobStore, Outcome, Transition

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "ChildCounts",
    "Job",
    "JobError",
    "JobStatus",
    "JobStore",
    "JobType",
    "Outcome",
    "Transition",
    "can_transition",
]
