"""Head sampling: ``telemetry.sample_ratio`` decides for new traces; a client's sampled
``traceparent`` is followed whatever the ratio."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.propagate import extract

from tako.app.config import Settings
from tako.app.services import tracing_provider
from tako.app.telemetry import build_tracer_provider

SAMPLED_PARENT = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
UNSAMPLED_PARENT = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}


def tracer(ratio: float) -> trace.Tracer:
    return build_tracer_provider("test", None, ratio).get_tracer("test")


def test_the_configured_ratio_reaches_the_sampler() -> None:
    settings = Settings(telemetry={"otlp_endpoint": "http://127.0.0.1:9/v1/traces",
                                   "sample_ratio": 0.125})
    provider = tracing_provider(settings)
    assert provider is not None
    assert "0.125" in provider.sampler.get_description()
    provider.shutdown()


def recorded(t: trace.Tracer, headers: dict[str, str] | None = None, n: int = 200) -> int:
    context = extract(headers) if headers else None
    count = 0
    for _ in range(n):
        span = t.start_span("x", context=context)
        count += span.is_recording()
        span.end()
    return count


def test_ratio_zero_records_no_new_trace_but_follows_a_sampled_client() -> None:
    t = tracer(0.0)
    assert recorded(t) == 0
    assert recorded(t, SAMPLED_PARENT) == 200


def test_ratio_one_records_every_new_trace_and_respects_an_unsampled_client() -> None:
    t = tracer(1.0)
    assert recorded(t) == 200
    assert recorded(t, UNSAMPLED_PARENT) == 0


def test_a_ratio_between_samples_about_that_share() -> None:
    assert 20 <= recorded(tracer(0.25), n=400) <= 180
