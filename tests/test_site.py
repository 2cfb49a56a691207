"""The course's web pages (``utils.site``), built from the one run per test session of each
solved notebook (the ``executed`` fixture) and opened in a real browser: headless Chromium
from Debian's package, driven by Selenium through Debian's chromedriver, over HTTP from
127.0.0.1 with every other host made unreachable.

Every page must open with no console error, load nothing from another host, load every image
it shows, and link only to pages and anchors that exist. Each chapter's page must show its
sections in its navigation, its figures, what its code printed and the numbers its prose
claims, with each exercise's reference solution (equal to solutions/) collapsed until clicked.
One screenshot per chapter is kept in the test's temporary directory.

``-k STEM`` builds the site of that chapter alone (a notebook run takes minutes). Without
Chromium the browser tests are skipped, saying how to install it; under CI they fail instead.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import threading
import time
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from utils import claims, notebooks, site

pytestmark = pytest.mark.notebook  # the pages are made from notebook runs
STEMS = [s.stem for s in notebooks.chapter_sources()]
INSTALL = "as root, `make browser` installs Debian's chromium and chromium-driver"
CHROMIUM_FLAGS = ("--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1600",
                  # any host but this machine fails at once, so a page that needs the internet shows it
                  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
SOLUTIONS = "details.hide.above-input"  # myst-nb's collapsed cell source: the solutions


def _normalised(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Site:
    out: Path
    stems: list[str]
    pages: list[Path]


@pytest.fixture(scope="module")
def built(request, executed, tmp_path_factory, measured) -> Site:
    """The site of the chapters under test (all of them unless ``-k`` chose some)."""
    chosen = {item.callspec.params["stem"] for item in request.session.items
              if item.path == request.path and "stem" in getattr(getattr(item, "callspec", None), "params", {})}
    stems = [s for s in STEMS if s in chosen] or STEMS
    runs = {stem: executed(stem)[0] for stem in stems}
    out = tmp_path_factory.mktemp("site")
    started = time.monotonic()
    pages = site.build_site(runs, out)
    measured(f"site: {len(pages)} pages for {len(stems)} chapters built in {time.monotonic() - started:.1f} s")
    return Site(out, stems, pages)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(built):
    """The base URL of the site, served over HTTP from 127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(built.out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        message = f"headless Chromium is not installed: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def _console_errors(browser) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


@dataclass
class Visit:
    errors: list[str]
    images: list[list]  # [src, complete, naturalWidth, naturalHeight]
    foreign: list[str]  # resources loaded from anywhere but the site
    links: list[str]
    ids: set[str]


_SURVEY = """return {
  images: [...document.images].map(i => [i.src, i.complete, i.naturalWidth, i.naturalHeight]),
  foreign: performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin)),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
}"""


@pytest.fixture(scope="module")
def visits(built, served, browser) -> dict[str, Visit]:
    """Every page opened once, by its path in the site."""
    found = {}
    for page in built.pages:
        path = page.relative_to(built.out).as_posix()
        browser.get(served + path)
        survey = browser.execute_script(_SURVEY)
        found[path] = Visit(_console_errors(browser), survey["images"], survey["foreign"], survey["links"],
                            set(survey["ids"]))
    return found


def test_the_site_never_replaces_a_folder_it_did_not_build(tmp_path):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no site built before: choose another output folder"):
        site.build_site({}, tmp_path)
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_pages_ask_for_nothing_from_the_internet(built):
    """No script, style sheet, font, image or frame comes from another host."""
    fetched = []
    for page in built.pages:
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        for tag in soup.find_all(["script", "link", "img", "iframe", "source", "video", "audio"]):
            address = tag.get("src") or (tag.get("href") if tag.name == "link" else None)
            if address and (urlsplit(address).scheme or address.startswith("//")):
                fetched.append(f"{page.name}: <{tag.name}> {address}")
    assert not fetched


def test_every_page_opens_without_errors_and_loads_its_images(visits, measured):
    for path, visit in visits.items():
        assert not visit.errors, f"{path}: console errors {visit.errors}"
        assert not visit.foreign, f"{path}: loaded from elsewhere {visit.foreign}"
        broken = [src for src, complete, width, height in visit.images if not (complete and width > 0 and height > 0)]
        assert not broken, f"{path}: images that did not load {broken}"
    measured(f"browser: {len(visits)} pages opened, {sum(len(v.images) for v in visits.values())} images loaded")


def test_every_internal_link_resolves(built, served, visits, measured):
    checked = 0
    for path, visit in visits.items():
        for link in visit.links:
            if not link.startswith(served):
                continue  # the references' addresses: links out, never loaded by the page
            address, _, anchor = link[len(served):].partition("#")
            target = address.split("?")[0] or "index.html"
            target = target + "index.html" if target.endswith("/") else target
            assert (built.out / target).is_file(), f"{path} links to {link}, which does not exist"
            if anchor:
                assert target in visits and anchor in visits[target].ids, f"{path} links to {link}: no such anchor"
            checked += 1
    assert checked > 0
    measured(f"browser: {checked} internal links resolve")


def _chapter(stem: str) -> tuple[str, list[tuple[str, str]]]:
    """A chapter's source text and its exercises in order: (name, reference source)."""
    source = notebooks.SOURCES / f"{stem}.md"
    text = source.read_text(encoding="utf-8")
    module_name, blocks = notebooks.parse(text, source.name)
    code = notebooks.definitions(importlib.import_module(f"solutions.{module_name}"))
    names = [notebooks.parse_exercise(line)[0] for b in blocks if b.kind == "exercise"
             for line in b.text.splitlines() if line.strip()]
    return text, [(name, code[name]) for name in names]


def _open(browser, served, page: str):
    browser.get(served + page)
    return browser.find_element("css selector", "article")


def _click(browser, element) -> None:
    browser.execute_script("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})", element)
    element.click()


def _shows(browser, element, seconds: float = 5) -> bool:
    """Whether ``element`` is displayed within ``seconds`` (a click's effect is not immediate)."""
    try:
        WebDriverWait(browser, seconds, poll_frequency=0.05).until(lambda _: element.is_displayed())
    except TimeoutException:
        return False
    return True


@pytest.mark.parametrize("stem", STEMS)
def test_each_solution_is_collapsed_until_clicked_and_equals_the_reference(stem, built, served, browser,
                                                                           screenshots, measured):
    _, exercises = _chapter(stem)
    article = _open(browser, served, f"chapters/{stem}.html")
    assert not browser.execute_script("return [...document.querySelectorAll('details')].some(d => d.open)"), \
        "a collapsed block (solution, hint or answer) is open before any click"
    solutions = article.find_elements("css selector", SOLUTIONS)
    assert len(solutions) == len(exercises), "one collapsed solution per exercise"
    for (name, reference), solution in zip(exercises, solutions):
        code = solution.find_element("css selector", "pre")
        assert not code.is_displayed(), f"{name}: the solution shows before a click"
        _click(browser, solution.find_element("css selector", "summary"))
        assert _shows(browser, code), f"{name}: a click does not open the solution"
        assert browser.execute_script("return arguments[0].innerText", code).rstrip("\n") == reference, \
            f"{name}: the page's solution differs from solutions/"
    browser.execute_script("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})", solutions[0])
    screenshot = screenshots / f"{stem}.png"  # the first exercise, its solution open
    assert browser.save_screenshot(str(screenshot))
    assert not _console_errors(browser)
    measured(f"{stem}: {len(solutions)} solutions collapsed, opened on click; screenshot {screenshot}")


@pytest.mark.parametrize("stem", STEMS)
def test_each_chapter_page_shows_its_sections_figures_printed_results_and_claims(stem, built, served, browser,
                                                                                 executed, measured):
    text, _ = _chapter(stem)
    notebook, _ = executed(stem)
    article = _open(browser, served, f"chapters/{stem}.html")

    headings = [line for block in notebooks.parse(text)[1] if block.kind == "markdown"
                for line in block.text.splitlines() if line.startswith("## ")]
    sections = browser.execute_script("return [...document.querySelectorAll('article h2')].map(h => "
                                      "h.closest('section').id)")
    in_toc = browser.execute_script("return [...document.querySelectorAll('#pst-page-toc-nav a')].map(a => "
                                    "a.getAttribute('href').slice(1))")
    assert len(sections) == len(headings), "every '## ' heading of the source is a section of the page"
    assert set(sections) <= set(in_toc), "every section is in the page's navigation"

    chapters = browser.execute_script("return [...document.querySelectorAll('.bd-docs-nav a')].map(a => a.href)")
    assert {f"{served}chapters/{s}.html" for s in built.stems} <= {c.split("#")[0] for c in chapters}
    order = ["index", *(f"chapters/{s}" for s in built.stems)]
    here = order.index(f"chapters/{stem}")
    neighbours = browser.execute_script("return [...document.querySelectorAll('.prev-next-area a')].map(a => a.href)")
    expected = [served + order[here - 1] + ".html"] + ([served + order[here + 1] + ".html"] if here + 1 < len(order) else [])
    assert [n.split("#")[0] for n in neighbours] == expected, "previous/next links follow the course's order"

    figures = sum("image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", []))
    assert len(article.find_elements("css selector", ".cell_output img")) == figures

    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    shown = _normalised(article.get_attribute("innerText"))
    printed = [o["text"].strip().splitlines()[-1] for c in notebook.cells for o in c.get("outputs", [])
               if o.get("output_type") == "stream" and o.get("name") == "stdout" and o["text"].strip()]
    missing = [line for line in printed if _normalised(line) not in shown]
    assert not missing, f"printed by the run but not on the page: {missing}"

    table = claims.load_table(stem)
    stated = [claims.render(match.group(0), table, f"{stem}.md") for match in claims.PLACEHOLDER.finditer(text)]
    missing = [claim for claim in stated if _normalised(claim) not in shown]
    assert not missing, f"claimed in the prose but not on the page: {missing}"
    measured(f"{stem}: {len(sections)} sections, {figures} figures, {len(printed)} printed results, "
          f"{len(stated)} claims on the page")
