"""`infofusion serve` pages: /docs and /redoc from local files (no CDN), example payloads in the schema,
and the conversation page at / driven in a real headless browser (Debian's chromium and its driver)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from data_factories import write_dialogue_csvs  # noqa: E402
from infofusion.inference import Predictor  # noqa: E402
from infofusion.inference.http import ServiceLimits, create_app  # noqa: E402
from test_inference import train  # noqa: E402

torch.set_num_threads(1)
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# Where the browser test leaves its screenshot (for a person to look at); a temporary folder by default.
SCREENSHOT_ENV = "INFOFUSION_PAGE_SCREENSHOT"


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    """A run that reads transcripts (hashing encoder on dialogue CSVs): the page sends text only."""
    root = tmp_path_factory.mktemp("page")
    write_dialogue_csvs(root / "csv", "meld", dialogues={"train": 6, "valid": 2, "test": 2})
    cache = f"data.cache_dir={root / 'cache'}"
    return train(
        root / "run", "bc_lstm", "--set", "data.encoder=hashing-64", "--set", cache, data=str(root / "csv")
    )


@pytest.fixture(scope="module")
def app(text_run):
    return create_app(Predictor.from_run(text_run), ServiceLimits())


def test_docs_load_their_assets_from_the_service_itself(app):
    client = TestClient(app)
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "/docs-assets/" in html
        assert not re.findall(r"(?:src|href)=[\"']?(?:https?:)?//", html), page  # no external URL
        for asset in re.findall(r"/docs-assets/[\w.-]+", html):
            response = client.get(asset)
            assert response.status_code == 200 and len(response.content) > 1000, asset
    assert "SwaggerUIBundle" in client.get("/docs-assets/swagger-ui-bundle.js").text


def test_request_schemas_carry_example_payloads(app):
    schemas = TestClient(app).get("/openapi.json").json()["components"]["schemas"]
    example = schemas["PredictRequest"]["examples"][0]
    assert example["utterances"][0] == {"speaker": "Alice", "text": "We finally got the results back!"}
    assert schemas["SessionUtterancesRequest"]["examples"][0]["utterances"][0]["speaker"] == "Alice"


def test_the_page_is_served_at_the_root(app):
    response = TestClient(app).get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "sessions/" in response.text and "<form" in response.text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def live_url(app):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
def test_a_conversation_typed_in_a_headless_browser(live_url, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1000,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        browser.get(live_url)
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: "bc_lstm" in b.find_element(By.ID, "model").text)
        turns = [
            ("Alice", "I got the job!"),
            ("Bob", "That is wonderful news."),
            ("Alice", "I am so nervous."),
        ]
        for number, (speaker, text) in enumerate(turns, start=1):
            name = browser.find_element(By.ID, "speaker")
            name.clear()
            name.send_keys(speaker)
            browser.find_element(By.ID, "text").send_keys(text)
            browser.find_element(By.ID, "send").click()
            wait.until(lambda b, n=number: len(b.find_elements(By.CSS_SELECTOR, ".turn")) == n)
        rows = browser.find_elements(By.CSS_SELECTOR, ".turn")
        assert [row.find_element(By.CLASS_NAME, "who").text for row in rows] == ["Alice:", "Bob:", "Alice:"]
        assert [row.find_element(By.CLASS_NAME, "said").text for row in rows] == [t for _, t in turns]
        classes = [c.text for c in rows[0].find_elements(By.CLASS_NAME, "class")]
        assert classes and all(not c.isdigit() for c in classes)  # class names, with one bar each
        chances = [float(c.text.rstrip("%")) for c in rows[-1].find_elements(By.CLASS_NAME, "chance")]
        assert abs(sum(chances) - 100) < 1.0
        label = rows[-1].find_element(By.CLASS_NAME, "label").text
        assert label.split(" (")[0] in classes and browser.find_element(By.ID, "error").text == ""
        wait.until(expected_conditions.element_to_be_clickable((By.ID, "restart"))).click()
        wait.until(lambda b: not b.find_elements(By.CSS_SELECTOR, ".turn"))
        # The conversation again for the screenshot a person looks at.
        for speaker, text in turns:
            name = browser.find_element(By.ID, "speaker")
            name.clear()
            name.send_keys(speaker)
            browser.find_element(By.ID, "text").send_keys(text)
            browser.find_element(By.ID, "send").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".turn")) == len(turns))
        screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "page.png")
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    finally:
        browser.quit()
