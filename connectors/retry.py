"""Retrying transient CRM failures, in one place.

Each connector sorts its client's exceptions with a `classify` function: a `Transient` failure
(connection dropped, 429, 5xx) is retried with exponential backoff and jitter, waiting at least
as long as the CRM's Retry-After; anything else, above all a `ConnectorError` such as a spent
daily limit or a refused token, stops at once instead of retrying forever.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

T = TypeVar("T")


class Transient(Exception):
    """A failure worth retrying; `retry_after` is the CRM's own hint, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    jitter_seconds: float = 0.5


def call_with_retries(
    call: Callable[[], T],
    classify: Callable[[Exception], Exception],
    policy: RetryPolicy = RetryPolicy(),
    on_retry: Callable[[Transient, int], None] | None = None,
) -> T:
    """Run `call`, retrying while `classify` turns its failure into `Transient`."""
    backoff = wait_exponential_jitter(
        multiplier=policy.initial_seconds, max=policy.max_seconds, jitter=policy.jitter_seconds
    )

    def wait(state: RetryCallState) -> float:
        hint = getattr(state.outcome.exception(), "retry_after", None) or 0.0
        return max(hint, backoff(state))

    def attempt() -> T:
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - classify decides what each failure means
            sorted_error = classify(error)
            if sorted_error is error:
                raise
            raise sorted_error from error

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.outcome.exception(), state.attempt_number)

    retrying = Retrying(
        retry=retry_if_exception_type(Transient),
        wait=wait,
        stop=stop_after_attempt(policy.attempts),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(attempt)
