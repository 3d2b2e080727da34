"""The README's screenshot of `chef-genius serve`: start the server on a model, ask its page for a recipe in
headless Chromium (Selenium + Debian's chromedriver, as tests/test_serve_page.py), wait until the recipe is
rendered (title, ingredients, numbered steps, checks) and save the whole page at a desktop width.

    python benchmarks/serve_screenshot.py --model /tmp/gg/SmolLM2-135M-Instruct.Q4_1.gguf --out docs/images/serve.png

The form keeps its defaults (the server's decoding, 512 tokens) unless told; the recipe is what the model wrote. The PNG
is reduced with Pillow (a 256-colour palette) when it would pass --max-kb.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def fail(message: str) -> None:
    print(f"serve_screenshot: {message}", file=sys.stderr)
    sys.exit(1)


def browser(width: int, profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_window_size(width, 900)
    return driver


def ask_and_shoot(driver, url: str, args: argparse.Namespace) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    driver.find_element(By.ID, "title").send_keys(args.title)
    driver.find_element(By.ID, "ingredients").send_keys(args.ingredients)
    if args.max_tokens:
        driver.find_element(By.ID, "max_tokens").clear()
        driver.find_element(By.ID, "max_tokens").send_keys(str(args.max_tokens))
    started = time.monotonic()
    driver.find_element(By.ID, "go").click()

    def rendered_or_error(d):
        if d.find_element(By.ID, "status").get_attribute("class") == "error":
            return "error"
        return d.find_element(By.ID, "recipe").is_displayed() and d.find_elements(By.CSS_SELECTOR, "[data-verdict]")

    if WebDriverWait(driver, args.wait + 30).until(rendered_or_error) == "error":
        fail("the page said: " + driver.find_element(By.ID, "status").text)
    seen = {
        "seconds": round(time.monotonic() - started, 1),
        "title": driver.find_element(By.ID, "r-title").text,
        "ingredients": [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#r-ingredients li")],
        "steps": [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#r-steps li")],
        "checks": [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#r-checks h4")],
        "meta": driver.find_element(By.ID, "r-meta").text,
    }
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(args.width, height + 140)  # the window's frame: the whole page in the viewport
    time.sleep(0.5)
    if not driver.save_screenshot(str(args.out)):
        fail(f"could not save {args.out}")
    return seen


def shrink(path: Path, max_kb: int) -> None:
    try:
        from PIL import Image
    except ImportError:
        print("Pillow is missing: the PNG is kept as Chromium wrote it", file=sys.stderr)
        return
    with Image.open(path) as image:
        image.load()
    image = image.convert("RGB")
    image.save(path, optimize=True)
    if path.stat().st_size > max_kb * 1024:
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="what `chef-genius serve` loads: a run, model folder or GGUF")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/serve.png", help="PNG to write")
    parser.add_argument("--title", default="Lemon garlic roast chicken")
    parser.add_argument("--ingredients", default="chicken, lemon, garlic, olive oil")
    parser.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    parser.add_argument("--width", type=int, default=1200, help="window width in pixels (default: 1200)")
    parser.add_argument("--max-tokens", type=int, default=None, help="the form's max tokens (default: its 512)")
    parser.add_argument("--wait", type=int, default=600,
                        help="seconds the recipe may take, the server's --timeout too (default: 600)")
    parser.add_argument("--server-arg", action="append", default=[], help="more for `chef-genius serve`, e.g. "
                        "--server-arg=--decoding=guarded (repeatable)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--max-kb", type=int, default=300, help="reduce the PNG's colours past this size")
    args = parser.parse_args()

    try:
        import selenium  # noqa: F401
    except ImportError:
        fail("needs selenium: pip install selenium (or pip install -e '.[test]')")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            fail(f"needs {path} (Debian's {package}): apt-get install chromium chromium-driver, or make browser")
    if args.out.exists() and not args.force:
        fail(f"{args.out} exists: choose another --out, or --force to replace it")
    args.out.parent.mkdir(parents=True, exist_ok=True)

    # The tests' server harness: port 0 (or --port), the address read from the server's output.
    sys.path.insert(0, str(ROOT))
    from tests.harness.serve_process import running_server

    # One request, so one slot (the image was made when eager steps still decoded every slot).
    # --server-arg comes after, so it can set another.
    extra = ["--host", "127.0.0.1", "--timeout", str(args.wait), "--max-batch", "1",
             *(["--port", str(args.port)] if args.port else []), *args.server_arg]
    threads = {"OMP_NUM_THREADS": str(os.cpu_count() or 1),
               "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    try:
        with running_server(Path(args.model), *extra, env=threads, start_timeout=300) as server, \
                tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            driver = browser(args.width, profile)
            try:
                seen = ask_and_shoot(driver, server.url, args)
            finally:
                driver.quit()
    except RuntimeError as error:  # the server did not start: its output follows the first line
        lines = [line for line in str(error).splitlines() if line.strip()]
        fail(" ".join(dict.fromkeys([lines[0], lines[-1]])))  # what happened, and the server's last word
    shrink(args.out, args.max_kb)
    print(json.dumps(seen, indent=1))
    print(f"{args.out}: {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
