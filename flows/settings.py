"""How the flows run their work: environment variables LEADSYNC_<NAME>."""

from __future__ import annotations

from typing import Literal

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SCORING_THREADS = 2  # workers of the thread runner: the chunks scored at once on threads


class JobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEADSYNC_", extra="ignore")

    task_runner: Literal["threads", "dask"] = Field(
        default="threads",
        description="where chunks are validated and scored: threads in the flow's process, "
        "or a Dask cluster (prefect-dask)",
    )
    dask_address: str | None = Field(
        default=None, description="scheduler of an existing Dask cluster; unset: a local one"
    )
    dask_workers: int = Field(
        default=2,
        ge=1,
        description="workers of the local Dask cluster; on any Dask cluster, the chunks "
        "scored at once",
    )
    chunk_leads: int = Field(
        default=20_000,
        ge=1,
        description="leads per chunk validated and scored at once (each contract run costs "
        "about a tenth of a second, whatever its size)",
    )
    chunk_seconds: float = Field(
        default=2.0,
        gt=0,
        description="a chunk holds at most what arrived within this time, so a slow read "
        "still writes as it goes",
    )
    chunks_in_flight: int = Field(
        default=2, ge=1, description="chunks being written while the next one is read and scored"
    )
    recheck_after_seconds: float = Field(
        default=30.0,
        ge=0,
        description="re-read a chunk's leads before writing when it was read longer ago than "
        "this, so a person's edit while it waited is not overwritten",
    )
    backfill_segment_leads: int = Field(
        default=50_000,
        ge=1,
        description="a backfill without a start keeps its progress after each this many leads",
    )
    write_lease_seconds: float = Field(
        default=240.0,
        ge=4,
        description="time to live of a run's write lease, renewed every quarter of it; a "
        "holder on another host that died is taken over after this (on the same host, at once); "
        "keep the CRM read timeouts under half of it",
    )
    write_wait_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="how long a run waits for another live run's write lease before it fails",
    )
    run_timeout_seconds: float = Field(
        default=6 * 3600.0,
        ge=0,
        description="a run still going after this ends Failed and frees its write lease "
        "(0: no limit)",
    )

    @property
    def chunks_scoring(self) -> int:
        """Chunks validated and scored at once: one per worker of the task runner, so that
        every worker is busy while the results are taken in order."""
        return self.dask_workers if self.task_runner == "dask" else SCORING_THREADS


class ListenSettings(BaseSettings):
    """The change listeners (flows/listen.py): LEADSYNC_LISTEN_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="LEADSYNC_LISTEN_", extra="ignore")

    window_seconds: float = Field(
        default=2.0, gt=0, description="a window of changes closes this long after its first"
    )
    window_leads: int = Field(
        default=100, ge=1, description="or at this many leads, when no more changes are waiting"
    )
    max_window_leads: int = Field(
        default=5_000, ge=1, description="the most leads one rescore run takes from a backlog"
    )
    quiet_seconds: float = Field(
        default=0.25,
        gt=0,
        description="a window of at least `window_leads` leads closes once no change came for "
        "this long, so the many deliveries of one burst join one run",
    )
    host: str = Field(default="127.0.0.1", description="HubSpot: the webhook receiver's address")
    port: int = Field(
        default=8765, ge=0, description="HubSpot: the webhook receiver's port (0: any free one)"
    )
    public_url: str | None = Field(
        default=None,
        description="HubSpot: the target URL the app posts to, when a proxy stands in front "
        "(it is the URL HubSpot signs); unset: http://HOST:PORT/",
    )


def task_runner(settings: JobSettings | None = None) -> TaskRunner:
    settings = settings or JobSettings()
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.dask_workers,
                "threads_per_worker": 1,
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=SCORING_THREADS)
