"""The OpenAPI document is the API's contract: Schemathesis generates requests from it
(examples, boundary values, random data, schema-breaking data) against a real service,
signed in as a grid worker and as the county's admin, and fails on any server error, any
status or header the document does not list, any answer that breaks its schema, any
invalid request accepted or valid one refused as invalid."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud.county_fixtures import County, county_database
from tests.support.cloud import ServeProcess, serving
from tests.support.county import TEST_JWT_SECRET
from tests.support.mosquitto import MosquittoBroker

CONFIG = Path(__file__).with_name("schemathesis.toml")
# Enough to reach every operation's branches in a few minutes on two cores; a fixed seed
# makes a failure reproducible (GRIDWATCH_CONTRACT_SEED tries others).
MAX_EXAMPLES = 10
SEED = os.environ.get("GRIDWATCH_CONTRACT_SEED", "1")


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("contract"))


@pytest.fixture(scope="module")
def serve(
    county: County, broker: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    yield from serving(
        tmp_path_factory.mktemp("serve"), county.url, broker.url, CLOUD_JWT_SECRET=TEST_JWT_SECRET
    )


@pytest.fixture(scope="module")
def tokens(county: County, serve: ServeProcess) -> dict[str, str]:
    # Signed in before any run: the runs' own wrong sign-ins lock this address for a while.
    return {user: serve.sign_in(user, county.passwords[user]) for user in ("worker", "admin")}


# The worker first: the admin's run may deactivate people, and a token of theirs would
# then answer 401 to everything.
@pytest.mark.parametrize("user", ["worker", "admin"])
@pytest.mark.timeout(900)
def test_the_api_keeps_its_openapi_contract(
    serve: ServeProcess, tokens: dict[str, str], user: str, tmp_path: Path
) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(CONFIG),
            "run",
            f"http://127.0.0.1:{serve.port}/openapi.json",
            "--header",
            f"Authorization: Bearer {tokens[user]}",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            SEED,
            "--no-color",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # its cache and reports stay out of the tree
        check=False,
    )
    # The failures, each with its curl line, then the summary (the warnings between are long).
    report = run.stdout
    failures = report[report.find("= FAILURES =") : report.find("= WARNINGS =")]
    summary = report[report.find("= SUMMARY =") :]
    assert run.returncode == 0, f"as {user}:\n{failures[:30000]}\n{summary}\n{run.stderr[-3000:]}"
