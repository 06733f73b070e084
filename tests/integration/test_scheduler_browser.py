"""What a person sees in Airflow's UI, checked from the rendered page: headless Chromium (Debian's
/usr/bin/chromium, driven by Playwright) against the API server that `airflow standalone` runs for the
real-scheduler tests. Screenshots of each page are kept under a temporary directory named at the end of the run
(UPDATE_DOCS_SCREENSHOT=1 also copies the sync view's to docs/sync-view.png).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from aporia_local.stack import LocalStack
from tests.helpers import seeded_rows, session_note
from tests.integration.standalone import SYNC_DAG, SYNC_TASK, USER, AirflowStandalone, ScheduledSyncs, sync_lookback

if TYPE_CHECKING:
    from playwright.sync_api import Browser, FrameLocator, Locator, Page

# sync_lookback() reads the example DAG, in the private Airflow home of the tier.
pytestmark = pytest.mark.usefixtures("airflow_env")
CHROMIUM = Path("/usr/bin/chromium")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "sync-view.png"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("screenshots")
    session_note(f"Screenshots of the browser tests: {path}")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make setup` installs Debian's chromium."
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser: Browser, standalone: AirflowStandalone) -> Iterator[Page]:
    """A signed-in page, signed in through Airflow's login form."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    signed_in = context.new_page()
    signed_in.goto(standalone.base_url + "/")
    signed_in.fill("input[name=username]", USER)
    signed_in.fill("input[name=password]", standalone.password)
    signed_in.click("button[type=submit]")
    signed_in.wait_for_url(standalone.base_url + "/")
    yield signed_in
    context.close()


def test_anonymous_requests_to_the_sync_view_get_401(browser: Browser, standalone: AirflowStandalone) -> None:
    context = browser.new_context()
    try:
        anonymous = context.new_page()
        response = anonymous.goto(standalone.base_url + "/aporia-sync/")
        assert response is not None and response.status == 401
        assert "Not authenticated" in anonymous.content()
        api = context.request.get(standalone.base_url + "/aporia-sync/api/windows")
        assert (api.status, api.json()) == (401, {"detail": "Not authenticated"})
    finally:
        context.close()


def add_connection_dialog(page: Page, base_url: str) -> Locator:
    """The Add Connection dialog with the Aporia type chosen."""
    from playwright.sync_api import expect

    page.goto(base_url + "/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    kind = dialog.get_by_role("combobox")
    kind.click()
    kind.fill("Aporia")
    page.get_by_role("option", name="Aporia", exact=True).click()
    expect(dialog.get_by_text("API token")).to_be_visible()
    return dialog


def test_the_aporia_connection_form_shows_the_aporia_fields(
    page: Page, standalone: AirflowStandalone, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    dialog = add_connection_dialog(page, standalone.base_url)
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    expect(dialog.get_by_text("Timeout (seconds)")).to_be_visible()
    page.screenshot(path=screenshots / "01-aporia-connection-form.png", full_page=True)

    labels = [" ".join(text.split()) for text in dialog.locator("label").all_inner_texts() if text.strip()]
    assert labels == [
        "Connection ID *",
        "Connection Type *",
        "Description",
        "Host",
        "API token",  # the password, relabelled
        "Port",
        "Scheme",
        "Environment *",
        "Verify SSL *",
        "Timeout (seconds) *",
    ]
    placeholders = {
        name: dialog.locator(f"input[name={name}]").get_attribute("placeholder") for name in ("host", "port", "schema")
    }
    assert placeholders == {"host": "app.aporia.com", "port": "443", "schema": "https"}
    assert dialog.locator("input[name=login]").count() == 0  # Aporia has no login
    assert dialog.locator("input[name=password]").get_attribute("type") == "password"
    page.keyboard.press("Escape")


@pytest.mark.parametrize(
    ("connection_id", "good_token", "title", "message"),
    [
        ("aporia_ui_good_token", True, "Test Connection Successful", "Connected to Aporia at http://127.0.0.1:{port}."),
        (
            "aporia_ui_wrong_token",
            False,
            "Test Connection Failed",
            "Aporia test_connection failed: HTTP 401: Invalid or missing API token; check the API token stored as "
            "the password of the Aporia connection.",
        ),
    ],
)
def test_the_test_button_answers_for_a_good_and_a_wrong_token(
    page: Page,
    standalone: AirflowStandalone,
    stack: LocalStack,
    screenshots: Path,
    connection_id: str,
    good_token: bool,
    title: str,
    message: str,
) -> None:
    """A person saves an Aporia connection through the form, then presses its Test button in the list."""
    from playwright.sync_api import expect

    dialog = add_connection_dialog(page, standalone.base_url)
    dialog.locator("input[name=connection_id]").fill(connection_id)
    dialog.locator("input[name=host]").fill("127.0.0.1")
    dialog.locator("input[name=port]").fill(str(stack.settings.aporia_port))
    dialog.locator("input[name=schema]").fill("http")
    dialog.locator("input[name=password]").fill(stack.settings.aporia_token if good_token else "not-the-token")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()

    page.goto(standalone.base_url + "/connections")
    row = page.get_by_role("row").filter(has_text=connection_id)
    row.get_by_role("button", name="Test Connection").click()
    toast = page.get_by_role("status").filter(has_text=title)
    expect(toast).to_be_visible()
    expect(toast).to_contain_text(message.format(port=stack.settings.aporia_port))
    expect(toast).to_be_in_viewport(ratio=1)  # slid in completely, for the screenshot
    page.screenshot(path=screenshots / f"02-test-button-{'good' if good_token else 'wrong'}-token.png")


def check_sync_view(view: Page | FrameLocator, s: ScheduledSyncs, stack: LocalStack) -> None:
    """The view shows each window once, with the counts Aporia holds: the scheduled ones succeeded (the lookback's
    rows apart, as re-read), the manual run over two halves marked as overlapping and not counted, the manual run's
    failed with its reason and the row it rejected, the subclass's window beside the others."""
    from playwright.sync_api import expect

    section = view.locator('section.version[data-model-id="insurance-propensity"][data-model-version="v1"]')
    expect(section).to_be_visible()
    facts = {
        name: section.locator(f'[data-fact="{name}"]').inner_text()
        for name in ("windows", "failed", "missing", "predictions_in_window", "actuals_in_window", "rows_rejected")
    }
    first, last = s.windows[0][0], s.windows[-1][1]
    predictions, actuals = seeded_rows(stack, first, last)
    subclass_predictions, subclass_actuals = seeded_rows(stack, *s.subclass_window)
    assert facts == {
        "windows": str(len(s.windows) + 2),
        "failed": "1",
        "missing": "0",
        # Each row once: what Aporia holds of the span, whatever the retries, the backfill and the overlapping run.
        "predictions_in_window": f"{len(predictions) + len(subclass_predictions):,}",
        "actuals_in_window": f"{len(actuals) + len(subclass_actuals):,}",
        "rows_rejected": "1",
    }
    assert section.locator("tr.gap").count() == 0
    delivered = len(s.windows) + 1  # and the subclass's
    assert section.locator("svg.sync-chart g.window.state-success:not(.overlapping)").count() == delivered
    overlapping = section.locator("tr.overlapping")
    assert overlapping.count() == 1
    assert overlapping.get_attribute("data-window-start") == s.overlapping_window[0].isoformat()
    assert overlapping.locator('[data-col="overlaps"]').inner_text().endswith("counted there, not in the totals")

    failed = section.locator("tr.failed")
    assert failed.count() == 1
    assert failed.get_attribute("data-window-start") == s.failed_window[0].isoformat()
    reason = failed.locator('[data-col="reason"]').inner_text()
    assert "pred-not-a-number" in reason and "not a finite number" in reason
    assert failed.locator('td[data-col="rows_rejected"]').inner_text().strip() == "1"

    rows = section.locator("tr.window.state-success:not(.overlapping)")
    assert rows.count() == delivered
    lookback = sync_lookback()
    retries = {
        w["window_start"]: f"{w['task_retries']} / {w['retries']}"
        for v in s.view
        if v["model_version"] == "v1"
        for w in v["windows"]
    }
    shown: list[Any] = []
    for i in range(rows.count()):
        row = rows.nth(i)
        cells = {
            col: row.locator(f'td[data-col="{col}"]').inner_text().strip()
            for col in ("rows_read", "predictions_in_window", "actuals_in_window", "reread", "rows_rejected", "retries")
        }
        shown.append((row.get_attribute("data-window-start"), row.get_attribute("class"), cells))
    subclass_counts = {
        "rows_read": str(len(subclass_predictions)),  # no lookback
        "predictions_in_window": str(len(subclass_predictions)),
        "actuals_in_window": str(len(subclass_actuals)),
        "reread": "0 / 0",
        "rows_rejected": "0",
        "retries": retries[s.subclass_window[0].isoformat()],
    }
    expected = [(s.subclass_window[0].isoformat(), "window state-success", subclass_counts)]
    for start, end in reversed(s.windows):  # newest first, as the table lists them
        read, _ = seeded_rows(stack, start - lookback, end)
        in_window, arrived = seeded_rows(stack, start, end)
        reread, reread_actuals = seeded_rows(stack, start - lookback, start)
        counts = {
            "rows_read": str(len(read)),
            "predictions_in_window": str(len(in_window)),
            "actuals_in_window": str(len(arrived)),
            "reread": f"{len(reread)} / {len(reread_actuals)}",
            "rows_rejected": "0",
            # Failed tries of the task (test_scheduler checks them against the logs) / delivery requests retried.
            "retries": retries[start.isoformat()],
        }
        expected.append((start.isoformat(), "window state-success", counts))
    assert shown == expected


def test_the_sync_view_shows_the_scheduled_windows_with_their_counts(
    page: Page, standalone: AirflowStandalone, scheduled_syncs: ScheduledSyncs, stack: LocalStack, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    # As a person finds it: Browse -> Aporia syncs, shown inside Airflow's UI.
    page.goto(standalone.base_url + "/")
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Aporia syncs").click()
    page.wait_for_url(standalone.base_url + "/plugin/aporia-sync")
    frame = page.frame_locator("iframe")
    expect(frame.locator("h1")).to_have_text("Aporia syncs")
    check_sync_view(frame, scheduled_syncs, stack)
    page.screenshot(path=screenshots / "03-sync-view-in-airflow.png")

    # And on its own page, whole.
    page.set_viewport_size({"width": 1300, "height": 600})  # the full-page shot grows to the content
    response = page.goto(standalone.base_url + "/aporia-sync/")
    assert response is not None and response.status == 200
    check_sync_view(page, scheduled_syncs, stack)
    shot = screenshots / "04-sync-view.png"
    page.screenshot(path=shot, full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS_SCREENSHOT)
        session_note(f"Copied the sync view's screenshot to {DOCS_SCREENSHOT}")


def test_a_scheduled_syncs_task_log_reads_well_in_the_ui(
    page: Page, standalone: AirflowStandalone, scheduled_syncs: ScheduledSyncs, screenshots: Path
) -> None:
    """What the person on call reads: which way the window was read, what was checked and sent, the summary."""
    from playwright.sync_api import expect

    run = scheduled_syncs.sync_runs[0]
    page.goto(f"{standalone.base_url}/dags/{SYNC_DAG}/runs/{run['dag_run_id']}/tasks/{SYNC_TASK}")
    for line in (
        "Reading predictions of insurance-propensity v1 in this task:",
        "Checked predictions of insurance-propensity v1:",
        "Sent ",
        "Sync summary for insurance-propensity v1:",
    ):
        expect(page.get_by_text(line).first).to_be_visible()
    page.screenshot(path=screenshots / "05-sync-task-log.png", full_page=True)
