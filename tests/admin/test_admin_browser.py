"""The admin page in a real headless Chromium (Debian's `chromium` and `chromium-driver`, which
`.ci/run` installs), driven by Selenium, against the API under uvicorn on a real Redis and the Feishu
emulator. OCRHUB_TEST_SCREENSHOTS=<folder> saves a screenshot of each step for a person to look at.

    OCRHUB_TEST_SCREENSHOTS=/tmp/admin-shots .venv/bin/python -m pytest -q -m browser
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocrhub.api import create_app
from tests.bots.feishu.fixtures import app, events, feishu, images_queued, serve  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser

PASSWORD = "browser-test-password-5521"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

if not (CHROMIUM and CHROMEDRIVER):
    # CI installs them (.ci/run); there a missing browser is a failure, not a skip.
    if os.environ.get("OCRHUB_TEST_REQUIRE_BROWSER"):
        raise RuntimeError("the browser tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver")
    pytest.skip("needs chromium and chromium-driver (apt-get install chromium chromium-driver)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as seen  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,900", "--lang=en-US"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def hub(settings, set_env, conn, feishu) -> Iterator[str]:  # noqa: F811
    with serve(create_app(set_env(admin_password=PASSWORD), conn)) as served:
        yield served.url


@pytest.fixture
def page(browser, hub, request) -> Iterator[webdriver.Chrome]:
    browser.delete_all_cookies()
    browser.get(f"{hub}/admin")
    browser.execute_script("localStorage.clear()")
    yield browser
    shot(browser, request.node.name, "end")


def shot(browser: webdriver.Chrome, test: str, step: str) -> None:
    folder = os.environ.get("OCRHUB_TEST_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"{test}-{step}.png"))


def wait_for(browser: webdriver.Chrome, condition, seconds: float = 10):  # noqa: ANN001, ANN201
    return WebDriverWait(browser, seconds).until(condition)


def sign_in(browser: webdriver.Chrome, password: str = PASSWORD) -> None:
    box = wait_for(browser, seen.visibility_of_element_located((By.ID, "password")))
    box.clear()
    box.send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()


def add_bot(browser: webdriver.Chrome, bot_id: str, fields: dict[str, str]) -> None:
    wait_for(browser, seen.element_to_be_clickable((By.ID, "add-bot"))).click()
    browser.find_element(By.ID, "bot-id").send_keys(bot_id)
    for element_id, value in fields.items():
        box = browser.find_element(By.ID, element_id)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "save-bot").click()


def test_sign_in_refuses_a_wrong_password_then_shows_the_bots(page, request):
    shot(page, request.node.name, "sign-in")
    sign_in(page, "not-the-password-at-all")
    wait_for(page, seen.text_to_be_present_in_element((By.ID, "message"), "Wrong password"))
    sign_in(page)
    wait_for(page, seen.visibility_of_element_located((By.ID, "bots")))
    assert page.find_element(By.ID, "bot-list").text == "No bots yet."
    assert page.get_cookie("ocrhub_admin")["httpOnly"] is True
    assert page.execute_script("return document.cookie") == ""  # the session is out of the script's reach


def test_a_bot_added_on_the_page_shows_its_webhook_url_and_answers_feishu(page, hub, app, events, conn, settings, request):  # noqa: F811
    sign_in(page)
    add_bot(page, "sales", {
        "bot-app-id": app.app_id, "bot-app-secret": app.app_secret, "bot-encrypt-key": app.encrypt_key,
        "bot-verification-token": app.verification_token, "bot-domain": events.emulator.origin,
    })  # fmt: skip
    card = wait_for(page, seen.visibility_of_element_located((By.ID, "bot-sales")))
    shot(page, request.node.name, "added")
    url = card.find_element(By.CLASS_NAME, "webhook").text
    assert url == f"{hub}/feishu/sales/events"
    assert app.app_secret not in page.page_source and app.encrypt_key not in page.page_source
    assert "app_secret: set" in card.find_element(By.CLASS_NAME, "secrets").text
    # No restart: the running API serves the new bot's webhook (within a second of the change), and a
    # worker downloads the picture and replies as that bot.
    from ocrhub.worker import build_worker
    from tests.imagegen import encode, text_image

    payload = events.image("oc_sales_chat", encode(text_image(["quote 4471 approved"], size=40), "PNG"))
    answer = events.deliver(url, payload)
    assert answer.status_code == 200 and answer.json()["status"] == "queued", answer.text
    [job] = images_queued(conn, settings)
    assert (job.bot_id, job.chat_id) == ("sales", "oc_sales_chat")
    build_worker(conn, settings).work(burst=True)
    [reply] = events.emulator.replies_to(payload["event"]["message"]["message_id"])
    assert reply.app_id == app.app_id and "quote 4471 approved" in reply.text
    card.find_element(By.XPATH, ".//button[text()='Test']").click()
    wait_for(page, seen.text_to_be_present_in_element((By.CSS_SELECTOR, "#bot-sales .test-result"), "tenant access token"))
    shot(page, request.node.name, "tested")


def test_a_bot_without_verification_is_refused_with_the_reason(page, request):
    sign_in(page)
    add_bot(page, "open", {"bot-app-id": "cli_open", "bot-app-secret": "some-app-secret-123"})
    wait_for(page, seen.text_to_be_present_in_element((By.ID, "message"), "Encrypt Key"))
    assert "error" in page.find_element(By.ID, "message").get_attribute("class")
    shot(page, request.node.name, "refused")


def test_the_language_switch_and_the_changes_log(page, request):
    sign_in(page)
    add_bot(page, "ops", {"bot-app-id": "cli_ops", "bot-app-secret": "ops-secret-123456", "bot-encrypt-key": "ops-key-123456"})
    wait_for(page, seen.visibility_of_element_located((By.ID, "bot-ops")))
    page.find_element(By.ID, "lang").click()
    wait_for(page, seen.text_to_be_present_in_element((By.CSS_SELECTOR, "#bots h2"), "飞书机器人"))
    rows = wait_for(page, lambda b: b.find_elements(By.CSS_SELECTOR, "#change-list tr"))
    assert "add feishu-bot ops" in rows[0].text and "ops-secret" not in page.page_source
    shot(page, request.node.name, "chinese")
    page.refresh()  # the choice is kept, and so is the session
    wait_for(page, seen.text_to_be_present_in_element((By.CSS_SELECTOR, "#bots h2"), "飞书机器人"))


def test_a_failed_job_is_requeued_from_the_page(page, conn, settings, request):
    from rq.registry import FailedJobRegistry

    from ocr_core.queue import delivery_queue
    from tests.admin.test_admin_operations import failed_delivery

    failed_id = failed_delivery(conn, settings)
    sign_in(page)
    row = wait_for(page, seen.visibility_of_element_located((By.ID, f"failed-{failed_id}")))
    assert "no sink named 'kb'" in row.text
    shot(page, request.node.name, "failed")
    row.find_element(By.TAG_NAME, "button").click()
    wait_for(page, seen.text_to_be_present_in_element((By.ID, "message"), "Handed back"))
    assert FailedJobRegistry(queue=delivery_queue(conn, settings)).get_job_ids() == []
    wait_for(page, lambda b: not b.find_elements(By.ID, f"failed-{failed_id}"))  # the list is loaded again


def test_the_knowledge_base_is_searched_with_thumbnails(page, conn, settings, request):
    from tests.admin.test_admin_operations import delivered_locally
    from tests.imagegen import encode, text_image

    delivered_locally(conn, settings, "invoice 2024-0815 total 1280.00", encode(text_image(["invoice 2024-0815"], size=40), "PNG"))
    delivered_locally(conn, settings, "lunch menu for friday", encode(text_image(["lunch menu"], size=40), "PNG"), chat="oc_other")
    sign_in(page)
    wait_for(page, seen.visibility_of_element_located((By.ID, "search-query"))).send_keys("invoice")
    page.find_element(By.CSS_SELECTOR, "#search-form button").click()
    hit = wait_for(page, seen.visibility_of_element_located((By.CSS_SELECTOR, "#search-results .hit")))
    assert len(page.find_elements(By.CSS_SELECTOR, "#search-results .hit")) == 1
    assert "invoice 2024-0815 total 1280.00" in hit.text and "ou_alice" in hit.text
    thumb = hit.find_element(By.TAG_NAME, "img")
    wait_for(page, lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumb))
    assert page.execute_script("return arguments[0].naturalWidth", thumb) > 0  # the thumbnail loaded, with the session cookie
    page.execute_script("arguments[0].scrollIntoView()", hit)
    shot(page, request.node.name, "found")


def test_a_broken_sink_url_is_refused_with_its_reason_and_a_route_is_saved(page, request):
    from tests.emulators.notion import NotionEmulator

    sign_in(page)
    with NotionEmulator() as notion:
        database_id, _ = notion.workspace.add_database(properties={"Name": "title", "Text": "rich_text"})
        wait_for(page, seen.visibility_of_element_located((By.ID, "sink-name"))).send_keys("kb")
        page.find_element(By.ID, "sink-url").send_keys(notion.sink_url(database_id))
        page.find_element(By.ID, "save-sink").click()
        wait_for(page, seen.text_to_be_present_in_element((By.ID, "message"), "'Message ID'"))
        assert "is missing" in page.find_element(By.ID, "message").text and notion.token not in page.page_source
        shot(page, request.node.name, "refused")
    page.find_element(By.ID, "route-key").send_keys("feishu:*")
    page.find_element(By.ID, "route-sinks").send_keys("feishu-reply, kb")
    page.find_element(By.ID, "save-route").click()
    wait_for(page, seen.text_to_be_present_in_element((By.ID, "message"), "no sink named 'kb'"))
    page.find_element(By.ID, "route-sinks").clear()
    page.find_element(By.ID, "route-sinks").send_keys("feishu-reply, local")
    page.find_element(By.ID, "save-route").click()
    wait_for(page, seen.text_to_be_present_in_element((By.ID, "route-list"), "feishu:* → feishu-reply, local"))
    shot(page, request.node.name, "routed")


def test_the_page_fits_a_phone_without_sideways_scrolling(page, request):
    page.set_window_size(390, 844)
    try:
        sign_in(page)
        add_bot(page, "a-bot-with-a-rather-long-name", {"bot-app-id": "cli_a1b2c3d4e5f6a7b8", "bot-app-secret": "s-123456789012", "bot-encrypt-key": "k-123456789012"})
        wait_for(page, seen.visibility_of_element_located((By.ID, "bot-a-bot-with-a-rather-long-name")))
        assert page.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        shot(page, request.node.name, "phone")
    finally:
        page.set_window_size(1100, 900)
