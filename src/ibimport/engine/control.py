"""Stopping a running batch from outside it (a signal handler): the pipelines drain, a
read-only phase (a wait) is cancelled at once."""

from __future__ import annotations

import anyio

from ibimport.engine.pipeline import Pipeline

__all__ = ["BatchControl"]


class BatchControl:
    """Lets a signal handler stop a running batch gracefully."""

    def __init__(self) -> None:
        self._pipelines: list[Pipeline] = []
        self._stop_requested = False
        self._scopes: list[anyio.CancelScope] = []

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def request_stop(self) -> None:
        self._stop_requested = True
        for pipeline in self._pipelines:  # one per partition
            pipeline.request_stop()
        for scope in self._scopes:  # a wait only reads: it stops at once
            scope.cancel()

    def attach(self, pipeline: Pipeline) -> None:
        """A pipeline that a stop drains (stopped at once if a stop came first)."""
        self._pipelines.append(pipeline)
        if self._stop_requested:
            pipeline.request_stop()

    def cancels(self, scope: anyio.CancelScope) -> None:
        """A read-only phase (a wait) that a stop cancels at once."""
        self._scopes.append(scope)
        if self._stop_requested:
            scope.cancel()
