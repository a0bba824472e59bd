"""Drive a gradio page in headless Chromium, the same way under gradio 3.41.2 and 4.40.0.

A helper for tests, not a test file::

    port = free_port()
    with serve([sys.executable, "-m", "sd_optim", "app", "--demo", "--port", str(port)]) as url, \\
            browser_page(tmp_path) as page:
        ui = GradioPage(page)
        ui.goto(url)
        ui.pick("sd_optim_method", "weighted_sum")

Components are addressed by their ``elem_id``. Chromium is Debian's (tools/ensure-chromium.sh),
run as root, hence ``--no-sandbox``. Where the two gradio versions render differently (the 4.x
Dataframe draws only the rows in view, for one), the difference is handled here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from playwright.sync_api import Locator, Page, sync_playwright

CHROMIUM = "/usr/lib/chromium/chromium"
T = TypeVar("T")


# --- the server -----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedURL(str):
    """The base URL of a running server; ``log`` is the file with its stdout and stderr."""

    log: Path

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _port_in(argv: list[str]) -> int:
    for i, arg in enumerate(argv):
        if arg == "--port" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
    raise ValueError(f"no --port in {argv}: pass port=")


def _answers_200(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def serve(argv: list[str], *, port: int | None = None, timeout: float = 120, log: Path | None = None,
          env: dict[str, str] | None = None) -> Iterator[ServedURL]:
    """Run ``argv`` (a server on 127.0.0.1) and yield its base URL once a GET answers 200.

    ``port`` defaults to the value of ``--port`` in ``argv`` (pick one with :func:`free_port`).
    stdout and stderr go to ``log`` (by default a temporary file, kept only when something failed);
    its tail is in the error when the server exits or does not answer within ``timeout`` seconds,
    and is printed to stderr when the body of the ``with`` raises. On exit the server (its whole
    process group) is terminated, then killed after 5 s.
    """
    url = ServedURL(f"http://127.0.0.1:{port or _port_in(argv)}/")
    own_log = log is None  # a temporary log is removed again unless something failed
    if log is None:
        fd, name = tempfile.mkstemp(prefix="serve-", suffix=".log")
        os.close(fd)
        log = Path(name)
    url.log = log
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=full_env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not _answers_200(url):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before answering {url}; "
                                   f"its output ({log}):\n{url.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer {url} within {timeout:.0f} s; "
                                   f"its output ({log}):\n{url.tail()}")
            time.sleep(0.25)
        try:
            yield url
        except BaseException:
            print(f"--- server output ({log}), last lines ---\n{url.tail()}", file=sys.stderr)
            raise
    except BaseException:
        own_log = False
        raise
    finally:
        _stop(proc)
        if own_log:
            log.unlink(missing_ok=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # its own session: helpers it started go too
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# --- the browser ----------------------------------------------------------------------------------


@contextlib.contextmanager
def browser_page(tmp_path: Path) -> Iterator[Page]:
    """A fresh page in headless Debian Chromium (1280x800, downloads accepted).

    When the body raises, a screenshot of the page is saved as ``tmp_path/failure.png``.
    """
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"],
                                     downloads_path=str(tmp_path / "downloads"))
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(20_000)
            try:
                yield page
            except BaseException:
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
                    print(f"screenshot of the page: {tmp_path / 'failure.png'}", file=sys.stderr)
                raise
        finally:
            browser.close()


def _css_string(text: str) -> str:
    return json.dumps(text)  # a double-quoted CSS string for ordinary labels


class GradioPage:
    """A gradio app in a Playwright page, its components addressed by ``elem_id``."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def root(self, elem_id: str) -> Locator:
        # 3.41 repeats a Markdown's / HTML's elem_id on an inner element: the first is the block.
        return self.page.locator(f"#{elem_id}").first

    def goto(self, url: str) -> None:
        """Open the app and wait until gradio has rendered its components."""
        self.page.goto(url)
        self.page.locator("gradio-app .contain [id]").first.wait_for(state="attached", timeout=60_000)

    def click(self, elem_id: str) -> None:
        self.root(elem_id).click()

    def fill(self, elem_id: str, text: str) -> None:
        """Replace the value of a Textbox or Number."""
        self.root(elem_id).locator("textarea, input").first.fill(text)

    def text(self, elem_id: str) -> str:
        """The visible text of a Markdown or HTML, the value of a Textbox or Number."""
        return self.root(elem_id).evaluate(
            """el => {
                const field = el.querySelector("textarea, input:not([type=file])");
                if (field) return field.value;
                return (el.querySelector(".prose") || el).innerText.trim();
            }""")

    # --- dropdowns ---

    def _options(self, elem_id: str) -> Locator:
        return self.root(elem_id).locator("ul.options")

    def _choose(self, elem_id: str, option: str) -> None:
        item = self._options(elem_id).locator(f"li[aria-label={_css_string(option)}]")
        if item.count() == 0:
            offered = self._options(elem_id).locator("li").evaluate_all(
                "items => items.map(li => li.getAttribute('aria-label'))")
            raise AssertionError(f"#{elem_id} offers no {option!r}; it offers {offered}")
        item.click()

    def _open(self, elem_id: str) -> None:
        if not self._options(elem_id).is_visible():
            self.root(elem_id).locator("input").click()
            self._options(elem_id).wait_for(state="visible")

    def pick(self, elem_id: str, option: str) -> None:
        """Select ``option`` in a single-select Dropdown."""
        self._open(elem_id)
        self._choose(elem_id, option)
        self._options(elem_id).wait_for(state="hidden")

    def pick_many(self, elem_id: str, options: list[str]) -> None:
        """Make ``options`` (in this order) the selection of a multiselect Dropdown."""
        root = self.root(elem_id)
        if root.locator(".token").count():
            root.locator(".token-remove.remove-all").click()
            self.wait_for(lambda: root.locator(".token").count() == 0, message=f"#{elem_id} cleared")
        for option in options:
            self._open(elem_id)
            self._choose(elem_id, option)
        self.page.keyboard.press("Escape")
        root.locator("input").blur()
        self._options(elem_id).wait_for(state="hidden")  # it fades out: wait, or a next pick misses it
        self.wait_for(lambda: self.selected(elem_id) == list(options), message=f"#{elem_id} shows {options}")

    def selected(self, elem_id: str) -> list[str]:
        """The selection of a Dropdown: the tokens of a multiselect one, else the shown value."""
        root = self.root(elem_id)
        tokens = root.locator(".token > span").all_inner_texts()
        if tokens:
            return [t.strip() for t in tokens]
        value = root.locator("input").first.input_value().strip()
        return [value] if value else []

    # --- checkbox groups ---

    def _checkbox(self, elem_id: str, option: str) -> Locator:
        box = self.root(elem_id).locator("label").filter(
            has=self.page.get_by_text(option, exact=True)).locator("input[type=checkbox]")
        if box.count() != 1:
            offered = self.root(elem_id).locator("label").all_inner_texts()
            raise AssertionError(f"#{elem_id} offers no {option!r} to tick; it offers {offered}")
        return box

    def ticked(self, elem_id: str) -> list[str]:
        """The ticked options of a CheckboxGroup."""
        return [t.strip() for t in self.root(elem_id).locator("label").filter(
            has=self.page.locator("input[type=checkbox]:checked")).all_inner_texts()]

    def tick(self, elem_id: str, option: str) -> None:
        """One click on ``option`` of a CheckboxGroup (ticks it, or unticks a ticked one)."""
        self._checkbox(elem_id, option).click()

    # --- dataframes ---

    def _virtual_table(self, elem_id: str) -> Locator | None:
        """4.x: the table that draws the rows, in view; None in 3.41 (which renders every row).

        The 4.x Dataframe draws only the rows in view (its first table only measures column widths),
        and none at all before the component has been inside the page's viewport.
        """
        table = self.root(elem_id).locator("svelte-virtual-table-viewport table")
        if table.count() == 0:
            return None
        table = table.first
        table.scroll_into_view_if_needed()
        with contextlib.suppress(AssertionError):  # an empty table never draws a row
            self.wait_for(lambda: table.evaluate(_VIEW_JS)["drawn"] > 0, timeout=2)
        return table

    def _row(self, elem_id: str, row: int) -> Locator:
        table = self._virtual_table(elem_id)
        if table is None:
            return self.root(elem_id).locator("tbody tr:has(td)").nth(row)
        # Scroll the row into the table's view, then count from the first row drawn.
        table.evaluate(f"(t, row) => {{ const v = ({_VIEW_JS})(t); t.scrollTop = row * v.height; }}", row)

        def drawn() -> list[int] | None:
            view = table.evaluate(_VIEW_JS)
            return [view["first"]] if view["first"] <= row < view["first"] + view["drawn"] else None

        (first,) = self.wait_for(drawn, timeout=5, message=f"row {row} of #{elem_id} drawn")
        return table.locator("tbody tr").nth(row - first)

    def _cell(self, elem_id: str, row: int, col: int) -> Locator:
        return self._row(elem_id, row).locator("td").nth(col)

    def cell(self, elem_id: str, row: int, col: int) -> str:
        """The text of a Dataframe cell (data rows from 0, the header excluded)."""
        return self._cell(elem_id, row, col).inner_text().strip()

    def edit_cell(self, elem_id: str, row: int, col: int, text: str) -> None:
        """Type ``text`` into a cell of an editable Dataframe and commit it with Enter; the
        component's ``change`` and ``input`` events then reach the server (after ~0.15 s)."""
        cell = self._cell(elem_id, row, col)
        cell.dblclick()
        field = cell.locator("input")
        field.fill(text)
        field.press("Enter")
        field.wait_for(state="detached")

    def row_count(self, elem_id: str) -> int:
        """The number of data rows of a Dataframe (header excluded). In 4.x an empty table costs 2 s."""
        table = self._virtual_table(elem_id)
        if table is None:
            return self.root(elem_id).locator("tbody tr:has(td)").count()  # an empty 3.41 table has a bare <tr>
        return int(table.evaluate(_VIEW_JS)["total"])

    # --- galleries, files, accordions ---

    def gallery_count(self, elem_id: str) -> int:
        """The number of images a Gallery shows (its grid exists in preview mode too)."""
        return self.root(elem_id).locator(".grid-container .thumbnail-item").count()

    def download(self, elem_id: str, dest_dir: Path) -> Path:
        """Click the link of a File output holding one file; save the download in ``dest_dir``."""
        link = self.root(elem_id).locator("a[download]").first
        with self.page.expect_download() as info:
            link.click()
        download = info.value
        dest = Path(dest_dir) / download.suggested_filename
        download.save_as(dest)
        return dest

    def open_accordion(self, label: str) -> None:
        """Open the Accordion titled ``label`` (nothing when it is open already). A click the page
        let pass while busy (a 2-core machine under load) is given again, at most twice."""
        header = self.page.locator(".label-wrap").filter(has=self.page.get_by_text(label, exact=True)).first

        def is_open() -> bool:
            return "open" in (header.get_attribute("class") or "").split()

        for attempt in range(3):
            if is_open():
                return
            header.click()
            try:
                self.wait_for(is_open, timeout=5, message=f"accordion {label!r} open")
                return
            except AssertionError:
                if attempt == 2:
                    raise

    def duplicate_ids(self) -> list[str]:
        """The ids that more than one component of the page uses (``root`` would see the first only).
        3.41 repeating a Markdown's elem_id on an element inside it does not count."""
        return self.page.evaluate("""() => {
            const byId = new Map();
            for (const el of document.querySelectorAll("gradio-app [id]")) {
                if (el.id) byId.set(el.id, [...(byId.get(el.id) || []), el]);
            }
            return [...byId].filter(([, els]) => !els.every(el => els[0].contains(el))).map(([id]) => id);
        }""")

    # --- waiting, pictures ---

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10, message: str = "") -> T:
        """Poll ``predicate`` until it returns something truthy, and return that; exceptions count
        as not yet. Fails with ``message``, the last value and the last exception."""
        deadline = time.monotonic() + timeout
        last: object = None
        error: Exception | None = None
        while True:
            try:
                last = predicate()
                error = None
                if last:
                    return last
            except Exception as exc:  # noqa: BLE001 - the element may not be there yet
                error = exc
            if time.monotonic() > deadline:
                detail = f"; last error: {error!r}" if error else ""
                raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}: "
                                     f"last value {last!r}{detail}")
            self.page.wait_for_timeout(100)

    def screenshot(self, path: str | Path) -> Path:
        self.page.screenshot(path=str(path), full_page=True)
        return Path(path)


# The 4.x Dataframe's virtual table keeps its bookkeeping in its inline style: the height of the
# rows not drawn above and below, and the average row height. From them: the index of the first
# row drawn, how many are drawn, and the total.
_VIEW_JS = """t => {
    const px = name => parseFloat(t.style.getPropertyValue(name)) || 0;
    const height = px("--bw-svt-avg-row-height");
    const above = px("--bw-svt-p-top"), below = px("--bw-svt-p-bottom");
    const drawn = t.querySelectorAll("tbody tr").length;
    const first = height ? Math.round(above / height) : 0;
    return {height, first, drawn, total: drawn + (height ? Math.round((above + below) / height) : 0)};
}"""
