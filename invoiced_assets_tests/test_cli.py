"""`invoiced-assets check` does what a hosted connector's "test & continue" does, against the
bundled emulator.

- Passing: it prints the environment, the account its records' links name, and each enabled
  object's record count, equal to the emulator's ground truth (archived plans and items and
  canceled subscriptions included), with one `per_page=1` request per listing and none per
  customer (contacts and payment sources are said not to be counted); `--json` says the same.
- A wrong key exits 3 with the 401 help naming INVOICED_API_KEY, the key nowhere in the output;
  an unreachable host or a wrong base URL exits 4 naming INVOICED_BASE_URL; a missing key or an
  invalid setting exits 2 saying what to set, without a request. No traceback in any of them.
- A listing the key may not read fails the check, and the others are still counted.
- `python -m invoiced_assets check` and the `invoiced-assets` console script work, and importing
  the command does not load the Dagster definitions.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from invoiced_assets import cli
from invoiced_assets.api.retry import RetryPolicy
from invoiced_assets.catalogue import CATALOGUE
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.emulator.server import ApiError

from .conftest import API_KEY, use_emulator

WRONG_KEY = "wrong-key-5ecret-f00dcafe"
COUNTED = [obj.name for obj in CATALOGUE if not obj.per_customer]
PER_CUSTOMER = [obj.name for obj in CATALOGUE if obj.per_customer]
LISTINGS = sum(len(obj.list_variants) for obj in CATALOGUE if not obj.per_customer)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: none of the developer's INVOICED_*, SNOWFLAKE_* or Dagster+
    variables; and retries that do not wait."""
    for name in list(os.environ):
        if name.startswith(("INVOICED_", "SNOWFLAKE_", "DAGSTER_CLOUD_")):
            monkeypatch.delenv(name)
    monkeypatch.setattr(cli, "CHECK_RETRY", RetryPolicy(max_retries=1, backoff_initial_seconds=0))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["check", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_counts(out: str) -> dict[str, str]:
    """Object name -> the Records column of the printed table."""
    names = {obj.name for obj in CATALOGUE}
    rows = (line.split() for line in out.splitlines())
    return {row[0]: row[1] for row in rows if len(row) > 1 and row[0] in names}


def free_port() -> int:
    """A loopback port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(server: EmulatorServer) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("INVOICED_", "SNOWFLAKE_", "DAGSTER_CLOUD_"))
    }
    env.update(INVOICED_API_KEY=API_KEY, INVOICED_BASE_URL=server.url)
    return env


# --------------------------------------------------------------------------------------------
# Passing
# --------------------------------------------------------------------------------------------


def test_prints_the_environment_account_and_true_counts(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_emulator(monkeypatch, emulator)
    emulator.reset_stats()
    code, out, err = run(capsys)
    assert (code, err) == (0, "")
    assert out.startswith("Invoiced connection check passed.")
    assert f"custom base URL {emulator.url} (from INVOICED_BASE_URL)" in out
    assert "accepted (read from INVOICED_API_KEY; not shown)" in out
    assert "dundermifflin (customer portal https://dundermifflin.invoiced.com" in out
    truth = emulator.truth()
    counts = table_counts(out)
    assert {name: counts[name] for name in COUNTED} == {
        name: f"{truth[name]:,}" for name in COUNTED
    }
    assert {name: counts[name] for name in PER_CUSTOMER} == dict.fromkeys(PER_CUSTOMER, "-")
    assert out.count("listed per customer (one request each): not counted here") == 2
    assert "/plans + /plans?archived=1" in out and "/subscriptions?all=1" in out
    # One request per listing, none per customer.
    stats = emulator.stats()
    assert stats["requests"] == LISTINGS == 16
    assert stats["by_status"] == {"200": LISTINGS}
    assert f"{LISTINGS} requests in" in out
    assert API_KEY not in out


def test_json_report_for_scripts(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_emulator(monkeypatch, emulator, INVOICED_DISABLED_OBJECTS="events,tasks")
    code, out, err = run(capsys, "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["ok"] is True and report["exit_code"] == 0
    assert (report["environment"], report["base_url"]) == ("custom", emulator.url)
    assert report["account"] == {
        "name": "dundermifflin",
        "portal": "https://dundermifflin.invoiced.com",
    }
    truth = emulator.truth()
    enabled = [name for name in COUNTED if name not in ("events", "tasks")]
    assert list(report["objects"]) == [
        o.name for o in CATALOGUE if o.name not in report["disabled"]
    ]
    assert {name: report["objects"][name]["records"] for name in enabled} == {
        name: truth[name] for name in enabled
    }
    assert "events" not in report["objects"] and report["disabled"] == ["events", "tasks"]
    assert report["objects"]["contacts"] == {
        "records": None,
        "per_customer": True,
        "listings": [],
        "error": None,
    }
    plans = report["objects"]["plans"]["listings"]
    assert [listing["request"] for listing in plans] == ["/plans", "/plans?archived=1"]
    assert sum(listing["records"] for listing in plans) == truth["plans"]


def test_requests_stay_within_max_in_flight(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_emulator(monkeypatch, emulator, INVOICED_MAX_IN_FLIGHT="2")
    emulator.reset_stats()
    code, _, _ = run(capsys)
    assert code == 0
    assert emulator.stats()["max_in_flight_seen"] <= 2


def test_settings_the_check_does_not_need_only_warn(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_emulator(monkeypatch, emulator, INVOICED_DESTINATION="snowflake")
    code, out, err = run(capsys)
    assert code == 0 and "check passed" in out
    assert "warning: The Snowflake destination needs these environment variables" in err
    assert "the pipeline will not load until it is fixed" in err


# --------------------------------------------------------------------------------------------
# Failing, with what to fix
# --------------------------------------------------------------------------------------------


def test_a_wrong_key_exits_3_with_the_help_and_never_shows_the_key(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_emulator(monkeypatch, emulator, INVOICED_API_KEY=WRONG_KEY)
    for argv in ((), ("--json",)):
        code, out, err = run(capsys, *argv)
        assert code == cli.EXIT_AUTHENTICATION == 3
        assert "Invoiced rejected the API key (HTTP 401" in err
        assert "Check INVOICED_API_KEY" in err and "Settings → Developers → API Keys" in err
        assert "Traceback" not in err
        for text in (out, err):
            assert WRONG_KEY not in text
            assert "5ecret" not in text and "f00dcafe" not in text  # not even partly
    report = json.loads(out)
    assert report["ok"] is False and report["error"]["status"] == 401


def test_an_unreachable_host_exits_4_naming_the_base_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("INVOICED_API_KEY", API_KEY)
    monkeypatch.setenv("INVOICED_BASE_URL", url)
    code, out, err = run(capsys)
    assert (code, out) == (cli.EXIT_CONNECTION, "")
    assert f"the connection check failed: custom base URL {url} (from INVOICED_BASE_URL)" in err
    assert "could not connect" in err and "INVOICED_BASE_URL / INVOICED_ENVIRONMENT" in err
    assert "Traceback" not in err and API_KEY not in err


def test_a_base_url_with_a_wrong_path_exits_4_naming_the_base_url(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_emulator(monkeypatch, emulator)
    code, _, err = run(capsys, "--base-url", f"{emulator.url}/v1")
    assert code == cli.EXIT_CONNECTION
    assert "(from --base-url)" in err
    assert "Request was not recognized: GET /v1/customers" in err and "INVOICED_BASE_URL" in err


def test_a_missing_key_exits_2_saying_to_set_it(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_emulator(monkeypatch, emulator, INVOICED_API_KEY="  ")
    emulator.reset_stats()
    code, out, err = run(capsys)
    assert (code, out) == (cli.EXIT_CONFIGURATION, "")
    assert "a setting is wrong, nothing was checked" in err
    assert "INVOICED_API_KEY is not set" in err and "Traceback" not in err
    assert emulator.stats()["requests"] == 0


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("INVOICED_MAX_IN_FLIGHT", "50", "INVOICED_MAX_IN_FLIGHT must be a whole number"),
        ("INVOICED_DISABLED_OBJECTS", "invoices,widgets", "names unknown objects: widgets"),
        ("INVOICED_ENVIRONMENT", "staging", "INVOICED_ENVIRONMENT must be 'production' or"),
        ("INVOICED_BASE_URL", "http://api.invoiced.com", "INVOICED_BASE_URL must use https"),
    ],
)
def test_an_invalid_setting_exits_2_with_the_settings_error(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv("INVOICED_API_KEY", API_KEY)
    monkeypatch.setenv(variable, value)
    code, out, err = run(capsys)
    assert (code, out) == (cli.EXIT_CONFIGURATION, "")
    assert message in err and "Traceback" not in err


def test_an_unreadable_listing_fails_the_check_and_the_others_are_counted(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    route = emulator._route

    def no_events(method: str, target: str, *args: Any) -> Any:
        if target.startswith("/events"):
            return ApiError(403, "You do not have permission to do that").response()
        return route(method, target, *args)

    monkeypatch.setattr(emulator, "_route", no_events)
    use_emulator(monkeypatch, emulator)
    code, out, err = run(capsys)
    assert code == cli.EXIT_AUTHENTICATION
    assert out.startswith("Invoiced connection check FAILED.")
    counts = table_counts(out)
    assert counts["events"] == "error" and counts["invoices"] == f"{emulator.truth()['invoices']:,}"
    assert "FAILED (HTTP 403): see below" in out
    assert "events: The API key may not read /events (HTTP 403" in err


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------


def test_the_command_line_chooses_the_environment_over_the_variables() -> None:
    env = {"INVOICED_ENVIRONMENT": "production", "INVOICED_BASE_URL": "http://127.0.0.1:1"}
    settings = cli.connection_settings(env)
    assert cli.resolve_target(settings, env) == cli.Target(
        "http://127.0.0.1:1", "custom", "INVOICED_BASE_URL"
    )
    assert cli.resolve_target(settings, env, "sandbox") == cli.Target(
        "https://api.sandbox.invoiced.com", "sandbox", "--environment"
    )
    assert cli.resolve_target(cli.connection_settings({}), {}) == cli.Target(
        "https://api.invoiced.com", "production", "default"
    )
    with pytest.raises(cli.SettingsError, match="--base-url must use https"):
        cli.resolve_target(settings, env, base_url_option="http://example.com")


def test_the_account_comes_from_the_records_links() -> None:
    def answer(name: str, record: dict[str, Any] | None) -> cli.ListingAnswer:
        return cli.ListingAnswer(cli.CountedListing(name, f"/{name}"), 1, record)

    api = "https://api.invoiced.com"
    customer = {"statement_pdf_url": "https://acme.invoiced.com/statements/x/pdf"}
    assert cli.account_portal([answer("customers", customer)], api) == "https://acme.invoiced.com"
    invoice = {"url": "https://billing.acme.example/invoices/x"}
    portal = cli.account_portal([answer("customers", None), answer("invoices", invoice)], api)
    assert portal == "https://billing.acme.example" and cli.account_name(portal) is None
    assert cli.account_portal([answer("plans", {"url": "https://x.invoiced.com"})], api) is None
    assert cli.account_name("https://acme.sandbox.invoiced.com") == "acme"
    assert "not named" in cli.describe_account(None)


def test_an_answer_without_a_total_is_not_the_invoiced_api() -> None:
    assert cli.total_count("42", [], "/invoices", "https://api.invoiced.com") == 42
    for header, body in ((None, []), ("many", []), ("3", {"a": 1})):
        with pytest.raises(cli.UnexpectedAnswerError, match="does not look like the Invoiced"):
            cli.total_count(header, body, "/invoices", "https://proxy.example")


# --------------------------------------------------------------------------------------------
# As installed
# --------------------------------------------------------------------------------------------


def test_python_m_invoiced_assets_check(emulator: EmulatorServer, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "invoiced_assets", "check"],
        env=subprocess_env(emulator),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert table_counts(done.stdout)["invoices"] == f"{emulator.truth()['invoices']:,}"


def test_the_console_script_is_installed_and_works(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    script = Path(sys.executable).parent / "invoiced-assets"
    assert script.is_file() and os.access(script, os.X_OK), "pip install -e . installs it"
    done = subprocess.run(
        [str(script), "check", "--json"],
        env=subprocess_env(emulator),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (
        json.loads(done.stdout)["objects"]["customers"]["records"] == emulator.truth()["customers"]
    )


def test_importing_the_command_does_not_load_the_definitions() -> None:
    probe = "import sys, invoiced_assets.cli; print('invoiced_assets.definitions' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
