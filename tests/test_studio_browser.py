"""The studio's page in a real browser: Playwright for Python driving Debian's chromium (``apt-get install chromium``).

Skipped, with the reason, where playwright or /usr/bin/chromium is missing (``playwright
install`` cannot download browsers here). Does what a person does: pick digits, set steps,
run and watch the bar and the image; read why an incompatible part is refused; cancel a job;
paint a mask and inpaint. Saves docs/studio.png.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("torch")
CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


if _skip_reason():
    print(f"skipping the studio browser tests: {_skip_reason()}")
    pytest.skip(_skip_reason(), allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from latentzoo.studio.app import Settings, create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Settings(outputs=tmp_path_factory.mktemp("studio-browser")))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        # bypass_csp: the tests' own wait_for_function predicates are strings the page's policy (no eval) refuses;
        # test_page_works_under_its_content_security_policy runs the page with the policy enforced.
        page = browser.new_page(viewport={"width": 1200, "height": 900}, bypass_csp=True)
        page.browser_for_tests = browser
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server + "/")
        page.wait_for_selector("#part-sampler")
        yield page
        browser.close()
        assert not errors, errors


def _pick(page, pipeline: str) -> None:
    page.select_option("#pipeline", pipeline)
    page.wait_for_function(
        "document.querySelector('#pipeline-description').textContent.length > 0 && !!document.querySelector('#part-prior')"
    )


def test_sample_shows_progress_and_the_image(page):
    _pick(page, "digits")
    page.fill("#opt-steps", "60")
    page.fill("#n", "2")
    before = page.locator("#gallery img").count()
    page.click("#run")
    # the bar moves (WebSocket progress events): a running job shows a step strictly between 0 and its total
    page.wait_for_function("[...document.querySelectorAll('#queue progress')].some(p => p.value > 0 && p.value < p.max)", timeout=60_000)
    page.wait_for_function(f"document.querySelectorAll('#gallery img').length >= {before + 2}", timeout=60_000)
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#queue li").first.get_attribute("data-status") == "done"
    page.locator("#gallery button").first.click()
    assert page.locator("#cli-command").text_content().startswith("latentzoo sample digits -n 2 --seed 0 --steps 60")
    assert '"seed": 0' in page.locator("#record-json").text_content()
    assert "out/000" in page.locator("#cli-file").text_content()
    page.click("#close-record")


def test_incompatible_part_is_disabled_with_the_reason(page):
    _pick(page, "digits")
    option = page.locator("#part-decoder option[value='digits-klvae']")
    assert option.is_disabled()
    assert "latent spaces do not match" in option.get_attribute("title")
    page.locator("#part-selects details summary").first.click()
    assert "digits-klvae: latent spaces do not match" in page.locator("#part-selects").inner_text()
    page.select_option("#part-sampler", "ddpm")  # a part that fits: accepted, no refusal shown
    page.wait_for_function("document.querySelector('#part-sampler').value === 'ddpm'")
    assert page.locator("#compose-reason").text_content() == ""
    _pick(page, "digits")


def test_cancel_stops_the_job(page):
    _pick(page, "digits")
    page.fill("#opt-steps", "1000")
    page.fill("#n", "1")
    page.click("#run")
    row = page.locator("#queue li").first
    page.wait_for_function("document.querySelector('#queue li')?.dataset.status === 'running'", timeout=60_000)
    row.locator("button.cancel").click()
    page.wait_for_function("document.querySelector('#queue li')?.dataset.status === 'cancelled'", timeout=60_000)
    assert row.locator("button.cancel").is_hidden()


def test_paint_a_mask_and_inpaint(page, tmp_path):
    from PIL import Image

    image = Image.new("L", (32, 32), 0)
    image.paste(255, (12, 4, 20, 28))
    path = tmp_path / "one.png"
    image.save(path)
    _pick(page, "digits")
    page.select_option("#command", "inpaint")
    page.set_input_files("#image-file", str(path))
    page.fill("#opt-steps", "5")
    page.locator("#mask-canvas").scroll_into_view_if_needed()
    canvas = page.locator("#mask-canvas").bounding_box()
    page.mouse.move(canvas["x"] + 30, canvas["y"] + 30)
    page.mouse.down()
    page.mouse.move(canvas["x"] + 200, canvas["y"] + 120, steps=8)
    page.mouse.up()
    before = page.locator("#gallery img").count()
    page.click("#run")
    page.wait_for_function(f"document.querySelectorAll('#gallery img').length > {before}", timeout=60_000)
    assert page.locator("#queue li").first.get_attribute("data-status") == "done"
    page.locator("#gallery button").first.click()
    assert page.locator("#cli-command").text_content().startswith("latentzoo inpaint digits ")
    assert '"edit": "inpaint"' in page.locator("#record-json").text_content()
    page.click("#close-record")
    page.select_option("#command", "sample")


def test_keyboard_only_text_to_image(page):
    """A text pipeline shows its prompt fields; Enter submits, Tab reaches the gallery, Enter opens the record."""
    _pick(page, "digits-t2i")
    assert page.locator("#text-fields").is_visible()
    page.fill("#opt-steps", "3")
    page.fill("#n", "1")
    page.focus("#prompt")
    page.keyboard.type("a thick seven")
    before = page.locator("#gallery img").count()
    page.focus("#seed")
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.querySelectorAll('#gallery img').length > {before}", timeout=60_000)
    page.focus("#gallery button")
    page.keyboard.press("Enter")
    assert page.locator("#record-dialog").is_visible()
    assert "--prompt 'a thick seven'" in page.locator("#cli-command").text_content()
    page.keyboard.press("Escape")
    assert not page.locator("#record-dialog").is_visible()
    _pick(page, "digits")


def test_page_works_under_its_content_security_policy(page, server):
    """The served policy (self only, no inline script, no eval) does not break the page: it loads, runs a job over
    the WebSocket and shows the image, with no policy violation reported."""
    from playwright.sync_api import expect

    strict = page.browser_for_tests.new_page(viewport={"width": 1200, "height": 900})
    violations: list[str] = []
    strict.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    strict.on("pageerror", lambda exc: violations.append(str(exc)))
    strict.goto(server + "/")
    expect(strict.locator("#part-sampler")).to_be_visible()
    strict.fill("#opt-steps", "3")
    strict.fill("#n", "1")
    strict.click("#run")
    expect(strict.locator("#queue li").first).to_have_attribute("data-status", "done", timeout=60_000)
    expect(strict.locator("#gallery img").first).to_be_visible()
    strict.close()
    assert not violations, violations


def test_screenshot_for_the_docs(page, tmp_path):
    """docs/studio.png (rewritten only with LATENTZOO_SCREENSHOT=1, so a test run leaves the tree clean)."""
    import os

    _pick(page, "digits")
    page.set_viewport_size({"width": 1200, "height": 900})
    page.locator("#part-selects details summary").nth(3).click()  # the decoders that do not fit, and why
    target = ROOT / "docs" / "studio.png" if os.environ.get("LATENTZOO_SCREENSHOT") else tmp_path / "studio.png"
    page.screenshot(path=str(target), full_page=False)
    assert target.stat().st_size > 10_000
    page.set_viewport_size({"width": 390, "height": 844})  # phone width: nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1200, "height": 900})
