"""Option resolution: precedence, OTEL_* compatibility, and errors that name the argument."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sluice import _health
from sluice._config import DEFAULT_ENDPOINT, resolve
from sluice.errors import ConfigError


def test_defaults_point_at_local_grpc_receiver() -> None:
    s = resolve({}, env={})
    assert s.endpoint == DEFAULT_ENDPOINT == "http://localhost:4317"
    assert s.protocol == "grpc"
    assert s.insecure
    assert s.sample_ratio == 1.0
    assert s.service_name == "unknown_service"


def test_arguments_beat_sluice_variables_beat_otel_variables() -> None:
    env = {"SLUICE_SERVICE_NAME": "s", "OTEL_SERVICE_NAME": "o",
           "SLUICE_ENDPOINT": "http://sluice:4317", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317"}
    assert resolve({"service_name": "arg"}, env=env).service_name == "arg"
    assert resolve({}, env=env).service_name == "s"
    assert resolve({}, env={"OTEL_SERVICE_NAME": "o"}).service_name == "o"
    assert resolve({}, env=env).endpoint == "http://sluice:4317"
    assert resolve({}, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317"}).endpoint == "http://otel:4317"


def test_otel_resource_attributes_supply_service_name_version_and_environment() -> None:
    s = resolve({}, env={"OTEL_RESOURCE_ATTRIBUTES": "service.name=a,service.version=1.2,deployment.environment=prod"})
    assert (s.service_name, s.service_version, s.environment) == ("a", "1.2", "prod")


def test_otel_sampler_variables_set_the_head_sampling_ratio() -> None:
    env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    assert resolve({}, env=env).sample_ratio == 0.25


def test_http_protocol_defaults_to_port_4318_and_https_is_secure() -> None:
    assert resolve({"protocol": "http/protobuf"}, env={}).endpoint == "http://localhost:4318"
    assert resolve({"endpoint": "https://otel.example:4317"}, env={}).insecure is False


def test_http_json_in_the_shared_otel_variable_falls_back_to_http_protobuf_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A JavaScript SDK on the same machine may set OTEL_EXPORTER_OTLP_PROTOCOL=http/json; that
    raised ConfigError and killed the app. The Python exporters cannot send JSON, so the same
    OTLP/HTTP endpoint gets protobuf, and the operator is told once."""
    _health.reset()
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    with caplog.at_level(logging.WARNING, logger="sluice.internal"):
        first = resolve({}, env=env)
        second = resolve({}, env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert (first.protocol, first.endpoint) == ("http/protobuf", "http://localhost:4318")
    assert (second.protocol, second.endpoint) == ("http/protobuf", "http://collector:4318")
    warnings = [r.getMessage() for r in caplog.records if "http/json" in r.getMessage()]
    assert len(warnings) == 1
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/json" in warnings[0]
    assert "http/protobuf instead" in warnings[0]
    assert resolve({"protocol": "grpc"}, env=env).protocol == "grpc"  # an argument still wins
    _health.reset()


@pytest.mark.parametrize(("arguments", "env", "named"), [
    ({"protocol": "http/json"}, {}, "protocol"),
    ({}, {"SLUICE_PROTOCOL": "HTTP/JSON"}, "SLUICE_PROTOCOL"),
])
def test_http_json_asked_of_sluice_itself_is_an_error_that_says_why(
    arguments: dict[str, object], env: dict[str, str], named: str,
) -> None:
    with pytest.raises(ConfigError, match=f"(?i){named}=.*http/json.*no JSON encoding.*'http/protobuf'") as info:
        resolve(arguments, env=env)
    assert info.value.name == named


def test_millisecond_otel_intervals_become_seconds() -> None:
    s = resolve({}, env={"OTEL_METRIC_EXPORT_INTERVAL": "5000", "OTEL_BLRP_SCHEDULE_DELAY": "250"})
    assert (s.metric_interval_s, s.schedule_delay_s) == (5.0, 0.25)


@pytest.mark.parametrize(("arguments", "named"), [
    ({"sample_ratio": 1.5}, "sample_ratio"),
    ({"protocol": "udp"}, "protocol"),
    ({"endpoint": "ftp://x"}, "endpoint"),
    ({"max_queue_size": 0}, "max_queue_size"),
    ({"colour": "blue"}, "colour"),
    ({"headers": 42}, "headers"),
])
def test_bad_argument_fails_fast_naming_the_argument(arguments: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(arguments, env={})
    assert info.value.name == named
    assert named in str(info.value)


@pytest.mark.parametrize(("arguments", "named", "accepted"), [
    ({"max_queue_size": -5}, "max_queue_size", "an integer > 0"),
    ({"export_timeout_s": -1}, "export_timeout_s", "seconds > 0"),
    ({"schedule_delay_s": float("inf")}, "schedule_delay_s", "seconds > 0"),
    ({"metric_interval_s": "soon"}, "metric_interval_s", "seconds > 0"),
    ({"spill_max_bytes": 1.5}, "spill_max_bytes", "an integer > 0"),
    ({"max_batch_size": [512]}, "max_batch_size", "an integer > 0"),
    ({"log_level": -10}, "log_level", "a logging level"),
    ({"insecure": "maybe"}, "insecure", "a bool"),
    ({"disabled_instrumentations": [1, 2]}, "disabled_instrumentations", "instrumentor names"),
])
def test_negative_and_wrongly_typed_values_name_option_value_and_what_is_accepted(
        arguments: dict[str, object], named: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(arguments, env={})
    assert info.value.name == named
    assert f"{named}={arguments[named]!r}" in str(info.value)
    assert accepted in str(info.value)


def test_unknown_option_suggests_the_nearest_one() -> None:
    with pytest.raises(ConfigError) as info:
        resolve({"sample_rate": 0.5}, env={})
    assert info.value.name == "sample_rate"
    assert str(info.value) == "sluice.init: unknown option sample_rate=0.5; did you mean `sample_ratio`?"


def test_unknown_option_far_from_any_lists_the_options_and_comes_with_the_other_problems() -> None:
    with pytest.raises(ConfigError) as info:
        resolve({"colour": "blue", "sample_ratio": 7}, env={})
    assert "unknown option colour='blue'; the options are service_name, endpoint," in str(info.value)
    assert "sample_ratio=7" in str(info.value)


def test_batch_larger_than_the_queue_is_a_config_error_not_an_opentelemetry_value_error() -> None:
    with pytest.raises(ConfigError) as info:
        resolve({"max_queue_size": 10, "max_batch_size": 100}, env={})
    assert info.value.name == "max_batch_size"
    assert str(info.value) == ("sluice.init: max_batch_size=100 is invalid; expected an integer > 0, "
                               "at most max_queue_size (10, from max_queue_size)")
    with pytest.raises(ConfigError) as from_env:
        resolve({}, env={"SLUICE_MAX_QUEUE_SIZE": "100"})
    assert from_env.value.name == "SLUICE_MAX_QUEUE_SIZE"
    assert "max_batch_size (512, the default)" in str(from_env.value)
    assert resolve({"max_queue_size": 10, "max_batch_size": 10}, env={}).max_batch_size == 10


def test_bad_variable_is_named_in_the_error() -> None:
    with pytest.raises(ConfigError, match="SLUICE_SAMPLE_RATIO"):
        resolve({}, env={"SLUICE_SAMPLE_RATIO": "lots"})


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        resolve({"sample_ratio": 2, "protocol": "udp"}, env={})
    assert "sample_ratio" in str(info.value)
    assert "protocol" in str(info.value)


def test_disabled_instrumentations_come_from_the_otel_variable() -> None:
    s = resolve({}, env={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "urllib, requests"})
    assert s.disabled_instrumentations == ("urllib", "requests")


def test_spill_dir_defaults_under_tmp_per_service(tmp_path: Path) -> None:
    assert "sluice-spill-billing" in str(resolve({"service_name": "billing"}, env={}).spill_dir)
    assert resolve({"spill_dir": str(tmp_path)}, env={}).spill_dir == tmp_path
