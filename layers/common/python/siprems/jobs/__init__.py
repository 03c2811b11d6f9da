"""Jobs: the model and state machine, the DynamoDB store, submission, fan-out and the
worker's per-message logic."""

from siprems.jobs.model import (
    TERMINAL,
    ChildCounts,
    Job,
    JobError,
    JobStatus,
    JobType,
)
from siprems.jobs.store import JobStore, Outcome, Transition

__all__ = [
    "TERMINAL",
    "ChildCounts",
    "Job",
    "JobError",
    "JobStatus",
    "JobStore",
    "JobType",
    "Outcome",
    "Transition",
]
