"""Drives a real headless Chromium through selenium and the system
chromedriver, for Switchboard's browser tests.

Run by switchboard_testkit::browser. It speaks JSON lines: it prints one
line when the browser is up ({"ready": true, ...} or {"error": ...}), then
reads one command per line on stdin and answers each with one line:

    {"id": 1, "cmd": "open", "url": "http://127.0.0.1:8000/page.html"}
    {"id": 1, "ok": true, "value": null}

Commands: open, wait_text, text, click, type, eval, screenshot, console,
quit (see COMMANDS). Errors answer {"id": n, "ok": false, "error": "..."}
with what the page showed, so a failing test says why. End of input quits
the browser, so a test that dies does not leave Chromium running.
"""

import argparse
import json
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def page_text(driver, limit=2000):
    """The visible text of the page, for error messages."""
    try:
        text = driver.find_element(By.TAG_NAME, "body").text
    except WebDriverException as e:
        return f"<no page text: {e.msg}>"
    return text if len(text) <= limit else text[:limit] + "..."


def element_text(driver, css):
    try:
        return driver.find_element(By.CSS_SELECTOR, css).text
    except NoSuchElementException:
        return None


def cmd_open(driver, req):
    driver.get(req["url"])


def cmd_wait_text(driver, req):
    """Waits until the element `css` exists and its text contains
    `contains`; answers the element's text."""
    css, want = req["css"], req["contains"]
    deadline = time.monotonic() + float(req.get("timeout_s", 10))
    while True:
        text = element_text(driver, css)
        if text is not None and want in text:
            return text
        if time.monotonic() >= deadline:
            seen = "no such element" if text is None else repr(text)
            raise TimeoutError(
                f"{css!r} did not contain {want!r} within {req.get('timeout_s', 10)} s "
                f"(it shows {seen}); page text:\n{page_text(driver)}"
            )
        time.sleep(0.05)


def cmd_text(driver, req):
    text = element_text(driver, req["css"])
    if text is None:
        raise LookupError(f"no element {req['css']!r}; page text:\n{page_text(driver)}")
    return text


def cmd_click(driver, req):
    driver.find_element(By.CSS_SELECTOR, req["css"]).click()


def cmd_type(driver, req):
    el = driver.find_element(By.CSS_SELECTOR, req["css"])
    if req.get("clear", True):
        el.clear()
    el.send_keys(req["text"])


def cmd_eval(driver, req):
    return driver.execute_script(req["script"], *req.get("args", []))


def cmd_screenshot(driver, req):
    if not driver.save_screenshot(req["path"]):
        raise OSError(f"could not write the screenshot to {req['path']}")


def cmd_console(driver, _req):
    """The browser console messages since the last call."""
    return [f"{e.get('level')}: {e.get('message')}" for e in driver.get_log("browser")]


COMMANDS = {
    "open": cmd_open,
    "wait_text": cmd_wait_text,
    "text": cmd_text,
    "click": cmd_click,
    "type": cmd_type,
    "eval": cmd_eval,
    "screenshot": cmd_screenshot,
    "console": cmd_console,
}


def start(args):
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in (
        "--headless=new",
        # Root in a container: Chromium's sandbox needs user namespaces.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={args.width},{args.height}",
        f"--user-data-dir={args.profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver path is given, so selenium never looks one up online.
    service = Service(executable_path=args.chromedriver, log_output=args.driver_log)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(args.page_load_timeout)
    driver.set_script_timeout(args.page_load_timeout)
    return driver


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chromium", required=True)
    parser.add_argument("--chromedriver", required=True)
    parser.add_argument("--profile", required=True, help="Chromium user data dir")
    parser.add_argument("--driver-log", required=True, help="chromedriver log file")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--page-load-timeout", type=float, default=20)
    args = parser.parse_args()

    try:
        driver = start(args)
    except Exception as e:  # noqa: BLE001 - reported to the test as is
        reply({"error": f"{type(e).__name__}: {e}"})
        return 1
    try:
        caps = driver.capabilities
        reply(
            {
                "ready": True,
                "browser": f"{caps.get('browserName')} {caps.get('browserVersion')}",
                "driver": caps.get("chrome", {}).get("chromedriverVersion", "").split(" ")[0],
            }
        )
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            if req.get("cmd") == "quit":
                reply({"id": req.get("id"), "ok": True, "value": None})
                break
            handler = COMMANDS.get(req.get("cmd"))
            try:
                if handler is None:
                    raise ValueError(f"unknown command {req.get('cmd')!r}")
                reply({"id": req.get("id"), "ok": True, "value": handler(driver, req)})
            except Exception as e:  # noqa: BLE001 - every failure goes back to the test
                msg = e.msg if isinstance(e, WebDriverException) else str(e)
                reply({"id": req.get("id"), "ok": False, "error": f"{type(e).__name__}: {msg}"})
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
