"""Option resolution: precedence, OTEL_* compatibility, and errors that name the argument."""

from __future__ import annotations

from pathlib import Path

import pytest

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
