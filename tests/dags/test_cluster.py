"""The throwaway-Airflow harness itself: what keeps concurrent test sessions' clusters apart."""

from __future__ import annotations

from tests.dags import cluster


class _InOrder:  # every caller walks the databases in the same order: the race a random order only makes rare
    def sample(self, population, k):
        return list(population)[:k]


def test_two_clusters_started_at_once_never_share_a_redis_database(monkeypatch):
    cluster._require_services()
    monkeypatch.setattr(cluster.secrets, "SystemRandom", _InOrder)
    first, first_client = cluster._free_redis_db()
    try:
        second, second_client = cluster._free_redis_db()  # the first is still empty of Celery's keys
        second_client.flushdb()
        assert second != first
    finally:
        first_client.flushdb()
