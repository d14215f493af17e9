"""The `invoiced-assets` command: `invoiced-assets check` tests the connection to Invoiced the
way a hosted connector's "test & continue" does, before a first sync.

    export INVOICED_API_KEY=...
    invoiced-assets check [--environment sandbox] [--base-url URL] [--json]

It reads the variables the pipeline reads (the key only from INVOICED_API_KEY: never from the
command line, never printed), makes one `per_page=1` request per listing, side by side, and
prints where it went, the account the records' links name, and each enabled object's record
count (`X-Total-Count`). Exit status: 0 passed, 2 a setting is wrong, 3 the key was refused,
4 Invoiced could not be reached or failed.

Only the API client, the settings and the catalogue are imported: the Dagster definitions are
not loaded, so the command neither waits for them nor fails on settings it does not use.
"""

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit

from invoiced_assets.api import client as client_module
from invoiced_assets.api.client import (
    ENVIRONMENT_URLS,
    ClientSettings,
    InvoicedClient,
    validate_base_url,
)
from invoiced_assets.api.errors import (
    InvoicedAuthenticationError,
    InvoicedConfigurationError,
    InvoicedError,
    InvoicedPermissionError,
)
from invoiced_assets.api.retry import RetryPolicy
from invoiced_assets.catalogue import CATALOGUE, InvoicedObject
from invoiced_assets.settings import Settings, SettingsError, load_settings

PROG = "invoiced-assets"

EXIT_OK = 0
EXIT_CONFIGURATION = 2  # also what argparse exits with for a bad command line
EXIT_AUTHENTICATION = 3
EXIT_CONNECTION = 4

# The variables that decide how Invoiced is reached and what is read: the check fails on
# these, as the pipeline would. The others (destination, schedule) only earn a warning: the
# check does not use them, and a connection check should not fail on a warehouse setting.
CONNECTION_VARIABLES = (
    "INVOICED_ENVIRONMENT",
    "INVOICED_BASE_URL",
    "INVOICED_DISABLED_OBJECTS",
    "INVOICED_MAX_IN_FLIGHT",
)

# A check answers in seconds: a few quick retries, not a sync's patient minutes (a sync's six
# retries, with waits growing to 30 s, would keep a user at a wrong URL waiting a minute).
CHECK_RETRY = RetryPolicy(
    max_retries=2, backoff_initial_seconds=0.25, backoff_max_seconds=2.0, retry_after_max_seconds=10
)
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 30.0

# The first request: every account has the listing, and its first record's links name the
# account's customer portal.
PROBE_ENDPOINT = "/customers"
# No endpoint names the account; links in these objects' records point to its customer
# portal, `https://<account>.invoiced.com` (or the business's own domain).
ACCOUNT_LINK_OBJECTS = ("customers", "invoices", "credit_notes", "estimates", "subscriptions")
ACCOUNT_LINK_FIELDS = ("statement_pdf_url", "sign_up_url", "url", "pdf_url", "payment_url")
INVOICED_PORTAL_DOMAINS = (".sandbox.invoiced.com", ".invoiced.com")
MIN_REDACTED_KEY_LENGTH = 8

MISSING_KEY = (
    "INVOICED_API_KEY is not set. Export it with an API key of the account to check (the key is"
    " read only from the environment, never from the command line). An account administrator"
    " can create a key in Invoiced under Settings → Developers → API Keys; a sandbox key also"
    " needs INVOICED_ENVIRONMENT=sandbox."
)


class UnexpectedAnswerError(InvoicedError):
    """An answer no Invoiced API sends (no `X-Total-Count`, not a list): the base URL points
    somewhere else."""


# --------------------------------------------------------------------------------------------
# What is checked
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where the check goes, and which setting chose it."""

    base_url: str
    environment: str  # production, sandbox, or custom (a base URL of neither)
    chosen_by: str  # --base-url, --environment, INVOICED_BASE_URL, INVOICED_ENVIRONMENT, default

    def describe(self) -> str:
        if self.environment == "custom":
            return f"custom base URL {self.base_url} (from {self.chosen_by})"
        return f"{self.environment}, {self.base_url} (from {self.chosen_by})"


@dataclass(frozen=True)
class CountedListing:
    """One `per_page=1` request whose `X-Total-Count` counts (part of) an object."""

    object_name: str
    endpoint: str
    params: tuple[tuple[str, str], ...] = ()

    def shown(self) -> str:
        return self.endpoint + (f"?{urlencode(self.params)}" if self.params else "")


@dataclass(frozen=True)
class ListingAnswer:
    listing: CountedListing
    records: int | None = None
    first_record: Mapping[str, Any] | None = None
    error: InvoicedError | None = None


@dataclass(frozen=True)
class ObjectResult:
    """One enabled object: its count (the sum of its listings), or why there is none."""

    name: str
    per_customer: bool
    answers: tuple[ListingAnswer, ...] = ()

    @property
    def error(self) -> InvoicedError | None:
        return next((a.error for a in self.answers if a.error is not None), None)

    @property
    def records(self) -> int | None:
        if self.per_customer or self.error is not None:
            return None
        return sum(a.records or 0 for a in self.answers)


@dataclass(frozen=True)
class CheckReport:
    target: Target
    account_portal: str | None
    objects: tuple[ObjectResult, ...]
    disabled: tuple[str, ...]
    requests: int
    seconds: float
    warnings: tuple[str, ...] = ()

    @property
    def errors(self) -> list[tuple[str, InvoicedError]]:
        return [(o.name, o.error) for o in self.objects if o.error is not None]

    @property
    def ok(self) -> bool:
        return not self.errors


# --------------------------------------------------------------------------------------------
# Settings: the pipeline's, read the pipeline's way
# --------------------------------------------------------------------------------------------


def connection_settings(env: Mapping[str, str]) -> Settings:
    """The pipeline's validation of the variables that reach Invoiced (`SettingsError`
    naming the variable at fault); the other variables are left to `other_settings_warnings`."""
    return load_settings({name: env[name] for name in CONNECTION_VARIABLES if name in env})


def other_settings_warnings(env: Mapping[str, str]) -> tuple[str, ...]:
    """What the pipeline would refuse among the settings the check does not need."""
    try:
        load_settings(env)
    except SettingsError as exc:
        return (
            f"{exc} The check does not need this setting, but the pipeline will not load until"
            " it is fixed.",
        )
    return ()


def environment_of(base_url: str) -> str:
    return next((name for name, url in ENVIRONMENT_URLS.items() if url == base_url), "custom")


def resolve_target(
    settings: Settings,
    env: Mapping[str, str],
    environment_option: str | None = None,
    base_url_option: str | None = None,
) -> Target:
    """The URL the check goes to, as the pipeline resolves it (a base URL wins over the
    environment), with the command line first: `--environment` alone checks that environment
    even when INVOICED_BASE_URL is set."""
    if base_url_option:
        try:
            base_url, chosen_by = validate_base_url(base_url_option), "--base-url"
        except InvoicedConfigurationError as exc:
            raise SettingsError(str(exc).replace("INVOICED_BASE_URL", "--base-url")) from None
    elif environment_option:
        base_url, chosen_by = ENVIRONMENT_URLS[environment_option], "--environment"
    elif settings.base_url:
        base_url, chosen_by = settings.base_url, "INVOICED_BASE_URL"
    else:
        base_url = ENVIRONMENT_URLS[settings.environment]
        chosen_by = (
            "INVOICED_ENVIRONMENT" if env.get("INVOICED_ENVIRONMENT", "").strip() else "default"
        )
    return Target(base_url, environment_of(base_url), chosen_by)


def api_key_from(env: Mapping[str, str]) -> str:
    api_key = env.get("INVOICED_API_KEY", "").strip()
    if not api_key:
        raise InvoicedConfigurationError(MISSING_KEY)
    return api_key


def check_client(target: Target, api_key: str, max_in_flight: int) -> InvoicedClient:
    return InvoicedClient(
        ClientSettings(
            api_key=api_key,
            base_url=target.base_url,
            connect_timeout_seconds=CONNECT_TIMEOUT_SECONDS,
            read_timeout_seconds=READ_TIMEOUT_SECONDS,
            max_in_flight=max_in_flight,
            retry=CHECK_RETRY,
        )
    )


# --------------------------------------------------------------------------------------------
# The requests
# --------------------------------------------------------------------------------------------


def counted_listings(objects: Iterable[InvoicedObject]) -> list[CountedListing]:
    """Every listing whose total counts an object: one per variant (plans and items archived
    and not, ...), with the parameters a complete copy needs (subscriptions `all=1`, ...).
    Per-customer objects have none: counting them takes one request per customer."""
    return [
        CountedListing(obj.name, obj.endpoint, tuple({**obj.list_params, **variant}.items()))
        for obj in objects
        if not obj.per_customer
        for variant in obj.list_variants
    ]


def total_count(header: str | None, body: Any, path: str, base_url: str) -> int:
    """`X-Total-Count` of a listing's answer, or the error saying the answer is not Invoiced's."""
    if header is None or not header.strip().isdigit() or not isinstance(body, list):
        what = "without an X-Total-Count header" if header is None else "an unexpected answer"
        raise UnexpectedAnswerError(
            f"GET {path} at {base_url} got {what}: it does not look like the Invoiced API."
            " Check INVOICED_BASE_URL (the API's host, e.g. https://api.invoiced.com) and"
            " INVOICED_ENVIRONMENT.",
            path=path,
        )
    return int(header)


def count(client: InvoicedClient, listing: CountedListing) -> ListingAnswer:
    """One listing's total and first record (raises the typed error)."""
    fetched = client.get(listing.endpoint, {**dict(listing.params), "per_page": 1})
    records = total_count(
        fetched.response.headers.get("X-Total-Count"),
        fetched.body,
        listing.endpoint,
        client.settings.base_url,
    )
    first = fetched.body[0] if fetched.body and isinstance(fetched.body[0], dict) else None
    return ListingAnswer(listing, records, first)


def count_or_error(client: InvoicedClient, listing: CountedListing) -> ListingAnswer:
    try:
        return count(client, listing)
    except InvoicedError as exc:
        return ListingAnswer(listing, error=exc)


def account_portal(answers: Iterable[ListingAnswer], api_url: str) -> str | None:
    """The account's customer portal as its records' links name it (`https://dundermifflin
    .invoiced.com`), or None when there is no such record."""
    api_host = urlsplit(api_url).hostname
    for answer in answers:
        record = answer.first_record
        if record is None or answer.listing.object_name not in ACCOUNT_LINK_OBJECTS:
            continue
        for name in ACCOUNT_LINK_FIELDS:
            value = record.get(name)
            if not isinstance(value, str):
                continue
            parts = urlsplit(value)
            host = parts.hostname
            if (
                parts.scheme in ("http", "https")
                and host
                and host not in (api_host, "invoiced.com")
            ):
                return f"{parts.scheme}://{host}"
    return None


def account_name(portal: str) -> str | None:
    """`dundermifflin` of `https://dundermifflin.invoiced.com` (None for a custom domain)."""
    host = urlsplit(portal).hostname or ""
    for domain in INVOICED_PORTAL_DOMAINS:
        if host.endswith(domain) and host.count(".") == domain.count("."):
            return host.removesuffix(domain)
    return None


def run_check(
    client: InvoicedClient,
    target: Target,
    objects: Sequence[InvoicedObject],
    disabled: Iterable[str] = (),
    warnings: tuple[str, ...] = (),
) -> CheckReport:
    """Probe once (a wrong key or URL fails there, as one error), then count every listing
    side by side (at most the client's `max_in_flight` at once): about one round trip each."""
    started = time.monotonic()
    probe = CountedListing("customers", PROBE_ENDPOINT)
    answers = {probe: count(client, probe)}  # raises: nothing else is worth trying then
    rest = [listing for listing in counted_listings(objects) if listing != probe]
    if rest:
        workers = min(len(rest), client.settings.max_in_flight)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check") as pool:
            answers.update(
                zip(rest, pool.map(lambda one: count_or_error(client, one), rest), strict=True)
            )
    results = tuple(
        ObjectResult(
            obj.name,
            obj.per_customer,
            tuple(answers[listing] for listing in counted_listings([obj])),
        )
        for obj in objects
    )
    return CheckReport(
        target=target,
        account_portal=account_portal(answers.values(), target.base_url),
        objects=results,
        disabled=tuple(sorted(disabled)),
        requests=len(answers),
        seconds=time.monotonic() - started,
        warnings=warnings,
    )


# --------------------------------------------------------------------------------------------
# What the user sees
# --------------------------------------------------------------------------------------------


def exit_code_for(error: InvoicedError) -> int:
    if isinstance(error, InvoicedConfigurationError):
        return EXIT_CONFIGURATION
    if isinstance(error, InvoicedAuthenticationError | InvoicedPermissionError):
        return EXIT_AUTHENTICATION
    return EXIT_CONNECTION


def describe_account(portal: str | None) -> str:
    if portal is None:
        return (
            "not named: the API has no endpoint that names the account, and no customer or"
            " document whose links would"
        )
    # No endpoint names the account: say where the name comes from.
    name = account_name(portal)
    source = "named by the records' links"
    return f"{name} (customer portal {portal}, {source})" if name else f"{portal} ({source})"


def counted_from(result: ObjectResult) -> str:
    if result.per_customer:
        return "listed per customer (one request each): not counted here"
    error = result.error
    if error is not None:
        status = f"HTTP {error.status}" if error.status else type(error).__name__
        return f"FAILED ({status}): see below"
    return " + ".join(answer.listing.shown() for answer in result.answers)


def records_text(result: ObjectResult) -> str:
    if result.per_customer:
        return "-"
    return "error" if result.records is None else f"{result.records:,}"


def render_text(report: CheckReport) -> str:
    """The report as an aligned table for a terminal."""
    verdict = "passed" if report.ok else "FAILED"
    lines = [
        f"Invoiced connection check {verdict}.",
        "",
        f"  Environment  {report.target.describe()}",
        "  API key      accepted (read from INVOICED_API_KEY; not shown)",
        f"  Account      {describe_account(report.account_portal)}",
        "",
    ]
    rows = [("Object", "Records", "Counted from")] + [
        (result.name, records_text(result), counted_from(result)) for result in report.objects
    ]
    name_width = max(len(row[0]) for row in rows)
    count_width = max(len(row[1]) for row in rows)
    lines += [f"  {n:<{name_width}}  {c:>{count_width}}  {how}".rstrip() for n, c, how in rows]
    lines.append("")
    if report.disabled:
        lines.append(f"  Disabled by INVOICED_DISABLED_OBJECTS: {', '.join(report.disabled)}")
    lines.append(f"  {report.requests} requests in {report.seconds:.2f}s.")
    return "\n".join(lines)


def report_json(report: CheckReport) -> dict[str, Any]:
    """The report for scripts: `objects.<name>.records` is null where nothing was counted."""
    portal = report.account_portal
    return {
        "ok": report.ok,
        "exit_code": EXIT_OK if report.ok else exit_code_for(report.errors[0][1]),
        "environment": report.target.environment,
        "base_url": report.target.base_url,
        "chosen_by": report.target.chosen_by,
        "account": {"name": account_name(portal) if portal else None, "portal": portal},
        "objects": {
            result.name: {
                "records": result.records,
                "per_customer": result.per_customer,
                "listings": [
                    {"request": a.listing.shown(), "records": a.records} for a in result.answers
                ],
                "error": None if result.error is None else error_json(result.error),
            }
            for result in report.objects
        },
        "disabled": list(report.disabled),
        "requests": report.requests,
        "seconds": round(report.seconds, 3),
        "warnings": list(report.warnings),
    }


def error_json(error: InvoicedError) -> dict[str, Any]:
    return {"type": type(error).__name__, "status": error.status, "message": str(error)}


class Printer:
    """Writes the command's output; the key, should any text ever hold it, never gets out."""

    def __init__(self, out: TextIO, err: TextIO, api_key: str) -> None:
        self.out, self.err = out, err
        # Real keys are long; a few characters would match ordinary words and garble the text.
        self.api_key = api_key if len(api_key) >= MIN_REDACTED_KEY_LENGTH else ""

    def _clean(self, text: str) -> str:
        return text.replace(self.api_key, "[INVOICED_API_KEY]") if self.api_key else text

    def print(self, text: str) -> None:
        print(self._clean(text), file=self.out, flush=True)

    def error(self, text: str) -> None:
        print(self._clean(text), file=self.err, flush=True)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def check(args: argparse.Namespace, env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    """`invoiced-assets check`: the report on stdout, errors and warnings on stderr."""
    printer = Printer(out, err, env.get("INVOICED_API_KEY", "").strip())
    target: Target | None = None
    try:
        settings = connection_settings(env)
        target = resolve_target(settings, env, args.environment, args.base_url)
        client = check_client(target, api_key_from(env), settings.max_in_flight)
        warnings = other_settings_warnings(env)
        for warning in warnings:
            printer.error(f"{PROG}: warning: {warning}")
        enabled = [obj for obj in CATALOGUE if obj.name not in settings.disabled_objects]
        report = run_check(client, target, enabled, settings.disabled_objects, warnings)
    except InvoicedError as exc:
        return failed(printer, exc, target, as_json=args.json)
    printer.print(json.dumps(report_json(report), indent=2) if args.json else render_text(report))
    for name, error in report.errors:
        printer.error(f"{PROG}: {name}: {error}")
    return EXIT_OK if report.ok else exit_code_for(report.errors[0][1])


def failed(printer: Printer, error: InvoicedError, target: Target | None, *, as_json: bool) -> int:
    """A check that stopped: the typed error's message on stderr (no traceback)."""
    code = exit_code_for(error)
    if code == EXIT_CONFIGURATION:
        printer.error(f"{PROG}: a setting is wrong, nothing was checked.\n{error}")
    else:
        where = target.describe() if target else "Invoiced"
        printer.error(f"{PROG}: the connection check failed: {where}.\n{error}")
    if as_json:
        document = {
            "ok": False,
            "exit_code": code,
            "environment": target.environment if target else None,
            "base_url": target.base_url if target else None,
            "error": error_json(error),
        }
        printer.print(json.dumps(document, indent=2))
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Replicate an Invoiced account into a warehouse, with Dagster."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check_parser = commands.add_parser(
        "check",
        help="test the connection to Invoiced and count each object's records",
        description=(
            "Test the connection to Invoiced as a hosted connector's 'test & continue' does:"
            " print the environment and account reached and every enabled object's record"
            " count, or what to fix. Reads INVOICED_API_KEY (never the command line; the key is"
            " never printed) and the pipeline's other INVOICED_* variables. An account"
            " administrator creates keys in Invoiced under Settings → Developers → API Keys."
        ),
        epilog=(
            "Exit status: 0 passed, 2 a setting is wrong, 3 the key was refused,"
            " 4 Invoiced could not be reached or failed."
        ),
    )
    # One or the other: a base URL always wins over an environment, as in the pipeline.
    target = check_parser.add_mutually_exclusive_group()
    target.add_argument(
        "--environment",
        choices=sorted(ENVIRONMENT_URLS),
        help="check this environment instead of INVOICED_ENVIRONMENT / INVOICED_BASE_URL",
    )
    target.add_argument(
        "--base-url",
        metavar="URL",
        help="check this API URL instead of INVOICED_BASE_URL (the emulator, a proxy)",
    )
    check_parser.add_argument(
        "--json", action="store_true", help="print the report as JSON (for scripts)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """`invoiced-assets COMMAND`: the exit status (see `EXIT_*`)."""
    args = build_parser().parse_args(argv)
    # The client's retry notices ("GET /customers: ...; retry 1 in 0.25s") say why a failing
    # check takes a moment; they name paths and reasons only, never the key.
    notices = logging.StreamHandler(sys.stderr)
    notices.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    notices.setLevel(logging.WARNING)
    client_logger = logging.getLogger(client_module.__name__)
    client_logger.addHandler(notices)
    try:
        return check(args, os.environ, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return 130
    finally:
        client_logger.removeHandler(notices)
