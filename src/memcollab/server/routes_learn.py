"""Online learning's counters: GET /v1/learning (the key's namespace) and the /metrics
gauges (all namespaces together, no namespace named: /metrics needs no key)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from memcollab.server.auth import Context, ReadKey
from memcollab.server.learn_queue import LearnQueue
from memcollab.server.schemas import Learning

router = APIRouter(prefix="/v1", tags=["learning"])
log = logging.getLogger("memcollab.server")


@router.get("/learning", response_model=Learning)
def learning(who: ReadKey, ctx: Context) -> dict[str, Any]:
    """Online learning in the key's namespace: queue rows by state, pairs distilled,
    refused by reason (the v2 screen's and the content screen's reasons, empty,
    malformed), failed by reason, offers deferred by a full queue, and tasks with a
    contrast still waiting for a queue row."""
    counts = ctx.learning.counts(who.namespace)
    return {"namespace": who.namespace, **counts, "waiting": ctx.learning.waiting(who.namespace)}


class LearningCollector(Collector):
    """Gauges read from the queue table at each scrape (the queue is shared by every
    process on the database, so these are its totals, not this process's work)."""

    def __init__(self, queue: LearnQueue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self.queue.counts()
        except Exception as exc:  # noqa: BLE001 - a scrape must answer; logged
            log.warning("learning metrics: %s", exc)
            return
        depth = GaugeMetricFamily(
            "memcollab_learn_queue", "Online-learning queue rows by state.", labels=["state"]
        )
        for state, n in counts["queue"].items():
            depth.add_metric([state], n)
        yield depth
        yield GaugeMetricFamily(
            "memcollab_learn_distilled", "Pairs distilled into a record.", value=counts["distilled"]
        )
        refused = GaugeMetricFamily(
            "memcollab_learn_refused", "Pairs refused, by reason.", labels=["reason"]
        )
        for reason, n in counts["refused"].items():
            refused.add_metric([reason], n)
        yield refused
        failed = GaugeMetricFamily(
            "memcollab_learn_failed", "Pairs failed, by reason.", labels=["reason"]
        )
        for reason, n in counts["failed"].items():
            failed.add_metric([reason], n)
        yield failed
        yield GaugeMetricFamily(
            "memcollab_learn_deferred",
            "Offers put off by a full queue (the backlog scan files them later).",
            value=counts["deferred"],
        )
        yield GaugeMetricFamily(
            "memcollab_learn_listener_errors",
            "Offers from verdicts that raised in this process (the scan recovers them).",
            value=self.queue.listener_errors,
        )
