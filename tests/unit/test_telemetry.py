"""The operator's own telemetry: metric series, the HTTP endpoints, structured logs.

Metrics are read back from the Telemetry object's own registry (never the global one);
the HTTP server is a real aiohttp server on 127.0.0.1 with a free port.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tidegate.telemetry import (
    JsonFormatter,
    Telemetry,
    TelemetryServer,
    TextFormatter,
    rollout_logger,
    setup_logging,
)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def telemetry(clock: FakeClock) -> Telemetry:
    return Telemetry(clock=clock, process_metrics=False)


def value(t: Telemetry, sample: str, /, **labels: str) -> float | None:
    """The sample's value in t's registry, None when the series does not exist."""
    return t.registry.get_sample_value(sample, labels)


def series_of(t: Telemetry, namespace: str, name: str) -> list[str]:
    """Names of all samples that belong to the Rollout namespace/name."""
    found = []
    for family in t.registry.collect():
        for sample in family.samples:
            rollout = sample.labels.get("rollout")
            if sample.labels.get("namespace") == namespace and rollout == name:
                found.append(sample.name)
    return found


# -- metrics -----------------------------------------------------------------------------


def test_a_fresh_registry_is_not_the_global_one(telemetry: Telemetry) -> None:
    from prometheus_client import REGISTRY

    assert isinstance(telemetry.registry, CollectorRegistry)
    assert telemetry.registry is not REGISTRY
    labels = {"namespace": "shop", "rollout": "web", "phase": "Healthy"}
    assert value(telemetry, "tidegate_rollout_phase", **labels) is None


def test_observe_rollout_sets_phase_step_weight_and_strategy(telemetry: Telemetry) -> None:
    telemetry.observe_rollout("shop", "web", phase="Progressing", step=2, weight=20, strategy="canary")

    rollout = {"namespace": "shop", "rollout": "web"}
    assert value(telemetry, "tidegate_rollout_phase", **rollout, phase="Progressing") == 1
    for other in ("Healthy", "Paused", "Degraded"):
        assert value(telemetry, "tidegate_rollout_phase", **rollout, phase=other) == 0
    assert value(telemetry, "tidegate_rollout_step", **rollout) == 2
    assert value(telemetry, "tidegate_rollout_canary_weight", **rollout) == 20
    assert value(telemetry, "tidegate_rollout_info", **rollout, strategy="canary") == 1
    # Counters start at zero on first sight, so increase() sees the first abort.
    assert value(telemetry, "tidegate_rollout_aborts_total", **rollout) == 0
    assert value(telemetry, "tidegate_rollout_promotions_total", **rollout) == 0


def test_rollout_series_carry_only_bounded_labels(telemetry: Telemetry) -> None:
    telemetry.observe_rollout("shop", "web", phase="Paused", step=1, weight=10, strategy="canary")
    telemetry.count_analysis_outcome("shop", "web", "success-rate", "Inconclusive")

    allowed = {"namespace", "name", "rollout", "phase", "strategy", "metric"}
    for family in telemetry.registry.collect():
        for sample in family.samples:
            if sample.name.startswith("tidegate_rollout") or sample.name.startswith("tidegate_analysis"):
                assert set(sample.labels) <= allowed, sample


def test_a_step_of_none_has_no_step_series(telemetry: Telemetry) -> None:
    telemetry.observe_rollout("shop", "bg", phase="Healthy", step=None, weight=100, strategy="blueGreen")

    assert value(telemetry, "tidegate_rollout_step", namespace="shop", rollout="bg") is None
    assert value(telemetry, "tidegate_rollout_canary_weight", namespace="shop", rollout="bg") == 100
    bg = {"namespace": "shop", "rollout": "bg"}
    assert value(telemetry, "tidegate_rollout_info", **bg, strategy="blueGreen") == 1


def test_phase_seconds_are_computed_at_scrape_time(telemetry: Telemetry, clock: FakeClock) -> None:
    rollout = {"namespace": "shop", "rollout": "web"}
    telemetry.observe_rollout("shop", "web", phase="Progressing", step=0, weight=0, strategy="canary")
    clock.now += 30
    assert value(telemetry, "tidegate_rollout_phase_seconds", **rollout, phase="Progressing") == 30

    # The same phase observed again keeps its start; a new phase restarts the clock.
    telemetry.observe_rollout("shop", "web", phase="Progressing", step=1, weight=10, strategy="canary")
    clock.now += 15
    assert value(telemetry, "tidegate_rollout_phase_seconds", **rollout, phase="Progressing") == 45
    telemetry.observe_rollout("shop", "web", phase="Paused", step=1, weight=10, strategy="canary")
    clock.now += 5
    assert value(telemetry, "tidegate_rollout_phase_seconds", **rollout, phase="Paused") == 5
    assert value(telemetry, "tidegate_rollout_phase_seconds", **rollout, phase="Progressing") is None


def test_phase_since_from_the_status_wins(telemetry: Telemetry, clock: FakeClock) -> None:
    since = datetime.fromtimestamp(clock.now - 600, tz=UTC)
    telemetry.observe_rollout(
        "shop", "web", phase="Degraded", step=3, weight=0, strategy="canary", phase_since=since
    )
    seconds = value(
        telemetry, "tidegate_rollout_phase_seconds", namespace="shop", rollout="web", phase="Degraded"
    )
    assert seconds == 600


def test_unknown_phases_are_refused(telemetry: Telemetry) -> None:
    with pytest.raises(ValueError, match="unknown rollout phase"):
        telemetry.observe_rollout("shop", "web", phase="Running", step=0, weight=0, strategy="canary")
    with pytest.raises(ValueError, match="unknown analysis outcome"):
        telemetry.count_analysis_outcome("shop", "web", "success-rate", "Running")


def test_counters(telemetry: Telemetry) -> None:
    telemetry.count_abort("shop", "web")
    telemetry.count_abort("shop", "web")
    telemetry.count_promotion("shop", "web")
    telemetry.count_analysis_outcome("shop", "web", "success-rate", "Successful")
    telemetry.count_analysis_outcome("shop", "web", "success-rate", "Successful")
    telemetry.count_analysis_outcome("shop", "web", "latency", "Failed")
    telemetry.count_api_error("patch", "virtualservices", 409)
    telemetry.count_api_error("patch", "virtualservices", "409")

    assert value(telemetry, "tidegate_rollout_aborts_total", namespace="shop", rollout="web") == 2
    assert value(telemetry, "tidegate_rollout_promotions_total", namespace="shop", rollout="web") == 1
    outcomes = "tidegate_analysis_outcomes_total"
    web = {"namespace": "shop", "rollout": "web"}
    assert value(telemetry, outcomes, **web, metric="success-rate", phase="Successful") == 2
    assert value(telemetry, outcomes, **web, metric="latency", phase="Failed") == 1
    errors = {"verb": "patch", "resource": "virtualservices", "code": "409"}
    assert value(telemetry, "tidegate_api_errors_total", **errors) == 2


def test_time_reconcile_observes_success_and_error(telemetry: Telemetry) -> None:
    with telemetry.time_reconcile():
        pass
    with pytest.raises(RuntimeError), telemetry.time_reconcile():
        raise RuntimeError("boom")

    assert value(telemetry, "tidegate_reconcile_duration_seconds_count", outcome="success") == 1
    assert value(telemetry, "tidegate_reconcile_duration_seconds_count", outcome="error") == 1
    assert (value(telemetry, "tidegate_reconcile_duration_seconds_sum", outcome="success") or 0) >= 0


def test_time_reconcile_spans_awaits(telemetry: Telemetry) -> None:
    async def reconcile() -> None:
        with telemetry.time_reconcile():
            await asyncio.sleep(0.02)

    asyncio.run(reconcile())
    assert (value(telemetry, "tidegate_reconcile_duration_seconds_sum", outcome="success") or 0) >= 0.02


def test_forget_removes_every_series_of_the_rollout(telemetry: Telemetry) -> None:
    for name in ("web", "api"):
        telemetry.observe_rollout("shop", name, phase="Progressing", step=1, weight=10, strategy="canary")
        telemetry.count_abort("shop", name)
        telemetry.count_promotion("shop", name)
        telemetry.count_analysis_outcome("shop", name, "success-rate", "Failed")
        telemetry.count_notification("shop", name, "slack", "on-rollout-aborted", 0.1, None)
        telemetry.count_notification("shop", name, "slack", "on-rollout-aborted", 0.1, "true")
    assert series_of(telemetry, "shop", "web")
    assert (
        value(
            telemetry,
            "tidegate_notifications_sent_total",
            namespace="shop",
            rollout="web",
            service="slack",
            trigger="on-rollout-aborted",
        )
        == 1
    )

    telemetry.forget("shop", "web")

    assert series_of(telemetry, "shop", "web") == []
    assert value(telemetry, "tidegate_rollout_aborts_total", namespace="shop", rollout="api") == 1
    assert value(telemetry, "tidegate_rollout_step", namespace="shop", rollout="api") == 1
    telemetry.forget("shop", "web")  # twice, or never seen: a no-op
    telemetry.forget("elsewhere", "nothing")


def test_process_metrics_are_in_the_registry_when_asked() -> None:
    t = Telemetry()
    names = {family.name for family in t.registry.collect()}
    assert "python_info" in names


# -- HTTP server -------------------------------------------------------------------------


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def test_server_answers_metrics_healthz_and_readyz(telemetry: Telemetry) -> None:
    telemetry.observe_rollout("shop", "web", phase="Paused", step=1, weight=10, strategy="canary")

    async def scenario() -> None:
        server = TelemetryServer(telemetry.registry, host="127.0.0.1", port=0)
        async with server, aiohttp.ClientSession() as session:
            assert server.port > 0
            assert server.url == f"http://127.0.0.1:{server.port}"

            status, _, body = await _get(session, f"{server.url}/healthz")
            assert status == 200

            status, _, body = await _get(session, f"{server.url}/readyz")
            assert status == 503, "not ready before the operator watches"
            server.set_ready(True)
            status, _, body = await _get(session, f"{server.url}/readyz")
            assert status == 200
            server.set_ready(False)
            status, _, body = await _get(session, f"{server.url}/readyz")
            assert status == 503

            status, content_type, body = await _get(session, f"{server.url}/metrics")
            assert status == 200
            assert content_type.startswith("text/plain")
            families = {family.name: family for family in text_string_to_metric_families(body)}
            phase = families["tidegate_rollout_phase"]
            paused = [s for s in phase.samples if s.labels["phase"] == "Paused"]
            assert paused[0].labels == {"namespace": "shop", "rollout": "web", "phase": "Paused"}
            assert paused[0].value == 1

            status, _, _ = await _get(session, f"{server.url}/nope")
            assert status == 404
        with pytest.raises(RuntimeError):
            _ = server.port

    asyncio.run(scenario())


def test_server_refuses_a_second_start(telemetry: Telemetry) -> None:
    async def scenario() -> None:
        async with TelemetryServer(telemetry.registry, host="127.0.0.1", port=0) as server:
            with pytest.raises(RuntimeError, match="already started"):
                await server.start()

    asyncio.run(scenario())


# -- logging -----------------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tidegate.test.telemetry")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.warning("weight %d%% not verified", 20)

    (line,) = lines(stream)
    assert line["level"] == "warning"
    assert line["logger"] == "tidegate.test.telemetry"
    assert line["message"] == "weight 20% not verified"
    assert isinstance(line["time"], str)
    assert datetime.fromisoformat(line["time"].replace("Z", "+00:00")).tzinfo is not None


def test_json_lines_carry_namespace_and_rollout_from_extras(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("step done", extra={"namespace": "shop", "rollout": "web", "step": 2})
    rollout_logger(logger, "shop", "api").info("paused")

    first, second = lines(stream)
    assert (first["namespace"], first["rollout"], first["step"]) == ("shop", "web", 2)
    assert (second["namespace"], second["rollout"]) == ("shop", "api")


def test_json_lines_pick_up_kopfs_object_reference(captured: tuple[logging.Logger, io.StringIO]) -> None:
    """kopf's ObjectLogger passes extra={"k8s_ref": {...}, "k8s_skip": ..., "settings": ...}."""
    logger, stream = captured
    settings = object()  # kopf's OperatorSettings: not serialisable, must not be printed
    ref = {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "name": "web",
        "uid": "u",
        "namespace": "shop",
    }
    logger.info("Handler succeeded.", extra={"k8s_ref": ref, "k8s_skip": False, "settings": settings})
    rs_ref = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "web-5d8f",
        "uid": "v",
        "namespace": "shop",
    }
    logger.info("Owner woken.", extra={"k8s_ref": rs_ref, "k8s_skip": True, "settings": settings})

    rollout_line, replicaset_line = lines(stream)
    assert rollout_line["namespace"] == "shop"
    assert rollout_line["rollout"] == "web"
    assert not {"k8s_ref", "k8s_skip", "settings"} & set(rollout_line)
    assert replicaset_line["object"] == "ReplicaSet/web-5d8f"
    assert "rollout" not in replicaset_line


def test_json_lines_carry_exceptions(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise ValueError("bad weight")
    except ValueError:
        logger.exception("reconcile failed", extra={"namespace": "shop", "rollout": "web"})

    (line,) = lines(stream)
    assert line["level"] == "error"
    assert "ValueError: bad weight" in str(line["exception"])


def test_text_format_prefixes_the_rollout() -> None:
    record = logging.LogRecord("tidegate", logging.INFO, __file__, 1, "promoted", (), None)
    record.namespace = "shop"
    record.rollout = "web"
    assert TextFormatter().format(record).endswith("info    tidegate [shop/web] promoted")


def test_setup_logging_installs_one_root_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before_handlers, before_level = list(root.handlers), root.level
    try:
        setup_logging("debug", json=True)
        handler = setup_logging("INFO", json=True)  # a second call replaces the first
        ours = [h for h in root.handlers if type(h) is type(handler)]
        assert ours == [handler]
        assert root.level == logging.INFO
        logging.getLogger("tidegate.test").info("hello", extra={"namespace": "shop", "rollout": "web"})
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (line["message"], line["namespace"], line["rollout"]) == ("hello", "shop", "web")
        with pytest.raises(ValueError, match="unknown log level"):
            setup_logging("loud", json=False)
    finally:
        root.handlers[:] = before_handlers
        root.setLevel(before_level)
