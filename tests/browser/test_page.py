"""The web page in a real browser: Debian's headless Chromium (driven by Playwright) against a real
`driftrec serve` on the seeded MovieLens data with the session's real vLLM, API key on.

Each step saves a screenshot under ``test-artifacts/browser/`` (CI keeps the folder)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftrec.config import Settings
from driftrec.llm import LLM
from tests.conftest import copy_of, endpoint_env, served

pytestmark = [pytest.mark.vllm, pytest.mark.browser]
KEY = "page-key-42"
SHOTS = Path(os.environ.get("DRIFTREC_TEST_ARTIFACTS", "test-artifacts")) / "browser"


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


@pytest.fixture(scope="module")
def server(settings: Settings, llm: LLM, seeded_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = copy_of(seeded_data, tmp_path_factory.mktemp("page"))
    env = endpoint_env(settings, llm, data, DRIFTREC_RANKING_LLM_WEIGHT="0.3", DRIFTREC_API_KEY=KEY)
    with served(data, env) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium on this machine: `apt-get install chromium` (.ci/run does) to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, server: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(240_000)  # an LLM turn on a shared 2-core box
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server)
    yield page
    context.close()
    assert errors == [], errors  # no script error on any step


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def open_user(page, user: str, key: str = KEY) -> None:  # type: ignore[no-untyped-def]
    page.get_by_label("User", exact=True).fill(user)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Open").click()


def card_ids(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.locator("#recs li.card").evaluate_all("cards => cards.map(c => c.dataset.item)")


def test_a_new_user_chats_gives_feedback_and_edits_the_profile(page) -> None:  # type: ignore[no-untyped-def]
    open_user(page, "web-visitor")
    page.wait_for_selector("#recs li.card")
    assert len(card_ids(page)) == 10
    assert "Ranked" in page.locator("#recs-status").inner_text()
    shot(page, "1-new-user")

    # chat: the reply streams in, then the list is recommended again
    page.get_by_label("Message").fill("I'm tired of horror, something funny from the 90s please")
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector("#log .turn.assistant:not(.thinking) span:not(:empty)")
    reply = page.locator("#log .turn.assistant span").first.inner_text()
    assert reply.strip() and reply != "(no answer)"
    page.wait_for_selector("#recs li.card")
    shot(page, "2-chat")

    # dislike the first card: it leaves the next list
    first = card_ids(page)[0]
    title = page.locator("#recs li.card h3").first.inner_text().split(". ", 1)[1]
    page.get_by_role("button", name=f"Dislike: {title}").click()
    page.wait_for_function(
        "first => [...document.querySelectorAll('#recs li.card')].length > 0 && "
        "![...document.querySelectorAll('#recs li.card')].some(c => c.dataset.item === first)",
        arg=first,
    )
    assert first not in card_ids(page)
    shot(page, "3-after-dislike")

    # the profile: add a dislike for Comedy; no comedy in the next list; the timeline shows the version
    page.get_by_label("Genre").select_option("Comedy")
    page.get_by_role("button", name="Add dislike").click()
    page.wait_for_selector("#dislikes li[data-name='Comedy']")
    page.wait_for_function(  # the list is recommended again after the edit, without comedies
        "() => !document.querySelector('#recs').hasAttribute('aria-busy') && "
        "[...document.querySelectorAll('#recs li.card .meta')].every(m => !m.textContent.includes('Comedy'))",
        timeout=120_000,
    )
    genres = page.locator("#recs li.card .meta").all_inner_texts()
    assert genres and not any("Comedy" in g for g in genres)
    assert "set by you" in page.locator("#dislikes li[data-name='Comedy']").inner_text()
    assert "added dislike Comedy" in page.locator("#edits").inner_text()
    assert page.locator("#timeline svg").count() == 1
    assert "v1" in page.locator("#timeline").get_attribute("aria-label")  # the chart's words for screen readers
    shot(page, "4-profile-edit")

    # the "why" view of one recommendation
    page.locator("#recs li.card").first.get_by_role("button", name="Why").click()
    page.wait_for_selector("#why-body h3")
    assert "Where it came from" in page.locator("#why-body").inner_text()
    shot(page, "5-why")
    page.get_by_role("button", name="Close").click()

    # undo the dislike from the profile
    page.get_by_role("button", name="Remove dislike Comedy").click()
    page.wait_for_function("() => !document.querySelector(\"#dislikes li[data-name='Comedy']\")")
    assert page.locator("#timeline svg text", has_text="v2").count() == 1


def test_a_wrong_key_and_bad_input_get_the_apis_messages_not_a_blank_page(page) -> None:  # type: ignore[no-untyped-def]
    open_user(page, "web-visitor-2", key="wrong")
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "API key is missing or wrong" in alert.inner_text()
    shot(page, "6-wrong-key")
    open_user(page, "a/b")
    assert "user: give an id without '/'" in alert.inner_text()
    open_user(page, "web-visitor-2")
    page.wait_for_selector("#recs li.card")
    assert alert.is_hidden()
    page.get_by_label("Message").fill("x" * 5000)  # the field stops at 4000, as the API does
    assert len(page.get_by_label("Message").input_value()) == 4000
