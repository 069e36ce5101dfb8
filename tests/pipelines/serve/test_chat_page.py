"""The chat page in a real browser (headless Chromium): it starts from the server's generation defaults and says the
demo model is not medical advice; its greedy reply streamed into the page is exactly the reply the OpenAI client
gets for the same conversation with the API's defaults, and a server error reaches the person in #error.

Needs Debian's chromium and chromedriver at pinned paths (the project's setup installs them); Selenium Manager is never
asked to download a driver (the `browser` fixture of tests/conftest.py). Fixtures `chat_url` and `openai_client`
come from conftest.py (a running app serving a small trained model)."""

from __future__ import annotations

import pytest

QUESTION = "What is the capital of France?"
WAIT_S = 60


@pytest.fixture
def page(browser, chat_url):
    """The chat page freshly loaded, with the model name from /healthz shown."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(chat_url.rstrip("/") + "/")
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_element("id", "model").text not in ("", "loading…"))
    return browser


def _fill(driver, element_id: str, value: str) -> None:
    field = driver.find_element("id", element_id)
    field.clear()
    field.send_keys(value)


def _send(driver, text: str) -> None:
    _fill(driver, "input", text)
    driver.find_element("id", "send").click()


def _wait_idle(driver, assistant_expected: bool = True) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    def done(d):
        if d.find_element("tag name", "body").get_attribute("data-state") != "idle":
            return False
        return not assistant_expected or bool(d.find_elements("css selector", "#messages .message.assistant"))

    WebDriverWait(driver, WAIT_S).until(done, message="the page did not finish its reply")


def _error_text(driver) -> str:
    error = driver.find_element("id", "error")
    return error.text.strip() if error.is_displayed() else ""


def test_streamed_greedy_reply_matches_the_api(page, openai_client, tmp_path):
    assert page.find_element("id", "model").text == openai_client.models.list().data[0].id
    # The page starts from the server's defaults (GET /healthz), the evaluated settings: greedy, no system prompt.
    assert page.find_element("id", "system").get_property("value") == ""
    assert page.find_element("id", "temperature").get_property("value") == "0"
    disclaimer = page.find_element("id", "disclaimer")
    assert disclaimer.is_displayed() and "not medical advice" in disclaimer.text
    _fill(page, "max-tokens", "12")
    assert page.find_element("id", "stop").get_property("disabled")

    _send(page, QUESTION)
    _wait_idle(page)

    assert _error_text(page) == "", f"the page shows an error: {_error_text(page)!r}"
    users = page.find_elements("css selector", "#messages .message.user")
    assert [u.get_property("textContent") for u in users] == [QUESTION]
    replies = page.find_elements("css selector", "#messages .message.assistant")
    assert len(replies) == 1
    shown = replies[0].get_property("textContent")

    expected = openai_client.chat.completions.create(  # the API's defaults: one question, one answer
        model=openai_client.models.list().data[0].id, messages=[{"role": "user", "content": QUESTION}], max_tokens=12,
    ).choices[0].message.content
    assert shown.strip() == expected.strip(), "the streamed reply on the page differs from the API's default reply"
    assert shown.strip(), "the model replied with nothing"
    assert page.find_element("id", "stop").get_property("disabled")
    assert not page.find_element("id", "send").get_property("disabled")

    shot = tmp_path / "chat.png"
    assert page.save_screenshot(str(shot))
    assert shot.stat().st_size > 0
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_server_error_is_shown(page):
    _fill(page, "max-tokens", "100000")  # over the server's max_tokens cap
    _send(page, QUESTION)
    _wait_idle(page, assistant_expected=False)

    error = page.find_element("id", "error")
    assert error.is_displayed(), "a rejected request shows no error"
    assert error.get_attribute("role") == "alert"
    assert "max_tokens" in error.text
    # Nothing came back, so the turn is taken out again and the question is back in the input box.
    assert page.find_elements("css selector", "#messages .message") == []
    assert page.find_element("id", "input").get_property("value") == QUESTION
