"""Schema-driven fuzzing of the OpenAPI document against the real app (schemathesis).

Every operation of ``/openapi.json`` gets a bounded number of generated requests (valid
and invalid ones), sent through the real Falcon app on the real PostgreSQL and Redis with
a funded API key and the admin key. A response fails the test when it is a 5xx, has a
status, content type or body the document does not declare for it (a 2xx body is validated
against the operation's schema: the envelope with its documented ``data``, from
``gateway/openapi_schemas.py``; an error against the error envelope), or accepts input the
document says is invalid. Examples are derandomized, so a run is repeatable.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.core.failures import FailureGroup

from conftest import ADMIN, make_app

EXAMPLES = 12  # per operation; the suite's budget, not a search for every bug
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance,
          checks.negative_data_rejection]


@schemathesis.serializer("application/offset+octet-stream")
def _offset_bytes(ctx, value):
    """tus PATCH bodies are raw bytes; generated values are sent as their text."""
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture(scope="module")
def fuzz_app(config, schema):
    # Async calls answer at once (no worker runs here), so no generated request waits.
    return make_app(config.replace(default_wait_s=0))


@pytest.fixture
def fuzz_schema(fuzz_app):
    return schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)


@pytest.fixture
def caller(fuzz_app):
    """A funded account on a plan generated requests cannot exhaust."""
    from falcon.testing import TestClient

    client = TestClient(fuzz_app)
    assert client.simulate_put("/admin/plans/fuzz", headers=ADMIN, json={
        "perMinute": 1_000_000, "perDay": 10_000_000}).status_code in (200, 201)
    resp = client.simulate_post("/admin/accounts", headers=ADMIN, json={
        "username": "fuzzer", "credits": 100_000, "plan": "fuzz"})
    assert resp.status_code == 201, resp.text
    return {"Authorization": f"Bearer {resp.json['data']['api_key']}", **ADMIN}


def _curl(exc) -> str:
    text = "\n".join(str(getattr(e, "message", "") or e) for e in
                     getattr(exc, "exceptions", [exc])) + "\n" + str(exc)
    found = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("curl ")]
    return found[0][:400] if found else "(no reproduction)"


def checks_for(operation) -> list:
    """Readiness answers 503 while no worker serves the queues, as here (no worker runs):
    documented and tested in test_ops; every other check still applies to it."""
    if operation.label == "GET /health/ready":
        return [c for c in CHECKS if c is not checks.not_a_server_error]
    return CHECKS


def _fuzz(operation, mode, headers) -> list[str]:
    """Run one operation's generated cases; its distinct failures as readable lines."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    def run(case):
        case.call_and_validate(headers=headers, checks=checks_for(operation))

    try:
        run()
    except Unsatisfiable:  # e.g. no invalid value exists for an operation without inputs
        return []
    except (FailureGroup, AssertionError) as exc:  # the distinct failures hypothesis found
        out = [f"{operation.label} [{mode.value}]: reproduce: {_curl(exc)}"]
        for failure in getattr(exc, "exceptions", [exc]):
            title = getattr(failure, "title", type(failure).__name__)
            message = str(getattr(failure, "message", "") or failure).strip()
            lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
            detail = [ln[:200] for ln in lines if ln.startswith(("Invalid component", "- "))]
            first = " ".join([lines[0][:160], *detail]) if lines else ""
            out.append(f"{operation.label} [{mode.value}]: {title}: {first}")
        return out
    return []


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=lambda m: m.value)
def test_every_operation_answers_as_documented(fuzz_schema, caller, mode):
    operations = [r.ok() for r in fuzz_schema.get_all_operations()]
    assert len(operations) > 50  # the whole document, not a vacuous pass
    failures = []
    for operation in operations:
        failures += _fuzz(operation, mode, caller)
    assert failures == [], f"{len(failures)} cases off the document:\n" + "\n".join(
        dict.fromkeys(failures))
