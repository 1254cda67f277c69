"""The layer over MLflow's scoring server: requests MLflow cannot read are refused with a
message made from the request's shape (never quoting it), a model bug is a 500 without its
traceback. Over HTTP: ``tests/e2e/test_model_server.py``."""

from __future__ import annotations

import json

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST

from facelens.serving.http_guard import ServingFault, _guarded, refusal
from facelens.serving.refusals import RequestRefused

SECRET = "c2VjcmV0LWltYWdl"  # stands for an image the client sent
JSON = "application/json"


@pytest.mark.parametrize(
    ("body", "code", "names"),
    [
        (b"{not json " + SECRET.encode(), "invalid_json", ["not valid JSON"]),
        (b"\xff\xfe{", "invalid_json", ["not valid JSON"]),
        ([SECRET], "invalid_input", ["JSON array"]),
        ({"inputs": SECRET}, "invalid_input", ["'inputs'", "JSON string"]),
        ({"dataframe_records": [{"img": SECRET}]}, "invalid_input", ["'img'", "'image'"]),
        ({"dataframe_split": {"columns": ["a", "b"], "data": [[SECRET, 1]]}}, "invalid_input",
         ["'a', 'b'"]),
        ({"dataframe_records": []}, "invalid_input", ["no column"]),
        ({"records": [SECRET]}, "invalid_input", ["exactly one of", "'records'"]),
        ({"inputs": [SECRET], "params": [1]}, "invalid_param", ["'params'", "JSON array"]),
        ({"inputs": [SECRET], "params": {"explain": SECRET, "method": 3}}, "invalid_param",
         ["'explain'", "'method'"]),
        ({"inputs": [SECRET], "params": {"explain": "yes"}}, "invalid_input", ["'image'"]),
    ],
)  # fmt: skip
def test_a_request_mlflow_cannot_read_is_refused_naming_the_field(body, code, names):
    data = body if isinstance(body, bytes) else json.dumps(body)
    refused = refusal(data, JSON)
    assert refused.code == code and refused.get_http_status_code() == 400
    assert all(name in refused.reason for name in names), refused.reason
    assert SECRET not in refused.serialize_as_json() and "\n" not in refused.reason


def test_another_content_type_is_refused_without_reading_it():
    refused = refusal(f"image\n{SECRET}\n", "text/csv")
    assert refused.code == "invalid_input" and SECRET not in refused.reason


def _raising(exc: Exception):
    def invocations(data, content_type, model, schema):
        raise exc

    return _guarded(invocations)


def test_mlflow_errors_become_refusals_and_a_model_bug_a_500_without_traceback(caplog):
    quoted = MlflowException(f"Failed to predict data '{SECRET}'", error_code=BAD_REQUEST)
    with pytest.raises(RequestRefused) as info:
        _raising(quoted)(json.dumps({"inputs": SECRET}), JSON, None, None)
    assert info.value.code == "invalid_input" and SECRET not in info.value.serialize_as_json()

    own = RequestRefused("batch_too_large", "the request has 65 rows; at most 64 are allowed")
    with pytest.raises(RequestRefused) as info:
        _raising(own)(b"{}", JSON, None, None)
    assert info.value is own

    bug = MlflowException("unexpected", error_code=BAD_REQUEST, stack_trace="Traceback: boom")
    with pytest.raises(ServingFault) as info:
        _raising(bug)(b"{}", JSON, None, None)
    body = json.loads(info.value.serialize_as_json())
    assert info.value.get_http_status_code() == 500 and body["error"] == "internal_error"
    assert "Traceback" not in info.value.serialize_as_json()
    assert "Traceback: boom" in caplog.text  # the server's log keeps it


def test_the_wrapper_answers_a_good_request_unchanged():
    wrapped = _guarded(lambda data, content_type, model, schema: ("ok", data))
    assert wrapped(b"{}", JSON, None, None) == ("ok", b"{}")
    assert wrapped.facelens_guard is True
