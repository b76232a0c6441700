"""Drive the course's JupyterLab in headless Chromium the way a student does (used by tests/test_browser.py).

LabServer starts JupyterLab with the course's own command (`python -m course_utils lab`); LabPage clicks through a
notebook in one browser page and reads what it shows. Waits are on events, never fixed sleeps: the kernel's own
messages (every request answered, kernel idle), the cells' execution state, the DOM.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ENV = "COURSE_CHROMIUM"  # a Chromium other than Debian's /usr/bin/chromium
ARTIFACTS = ROOT / ".cache" / "browser"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
               # without these a Chromium on a closed network stalls on its own update and sync requests
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or "/usr/bin/chromium"
    return path if Path(path).exists() else None


def launch_browser(playwright):
    """Headless Debian Chromium through Playwright (no browser download), fresh profile every time."""
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=LAUNCH_ARGS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """`python -m course_utils <command>` on a free port, with a known token and a private workspace and settings
    folder (the student's own tabs and settings are neither read nor changed)."""

    def __init__(self, tmp: Path, command: str = "lab", env: dict | None = None):
        self.port, self.token, self.command = free_port(), "course-browser-test", command
        self.tmp = Path(tmp)
        self.log_path = self.tmp / f"jupyterlab-{command}.log"
        self.env = dict(os.environ if env is None else env)
        self.proc = None

    def __enter__(self):
        cmd = [sys.executable, "-m", "course_utils", self.command, "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", f"--IdentityProvider.token={self.token}",
               "--LabApp.expose_app_in_browser=True",  # lets the test read cell state as JupyterLab holds it
               f"--LabApp.workspaces_dir={self.tmp / 'workspaces'}",
               f"--LabApp.user_settings_dir={self.tmp / 'user-settings'}"]
        self.tmp.mkdir(parents=True, exist_ok=True)
        # the test runs the repo's own notebooks: it must never save them (autosave would, after 2 minutes)
        docmanager = self.tmp / "user-settings" / "@jupyterlab" / "docmanager-extension"
        docmanager.mkdir(parents=True, exist_ok=True)
        (docmanager / "plugin.jupyterlab-settings").write_text('{"autosave": false}')
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{' '.join(cmd[1:4])} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=5):
                    return self
            except OSError:
                time.sleep(0.2)  # polling the server until it answers, not waiting a fixed time
        raise RuntimeError(f"JupyterLab did not answer within 120 s:\n{self.output()}")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str):
        """GET a server API path (JSON), e.g. api("api/contents/notebooks")."""
        with urllib.request.urlopen(f"{self.base}/{path}?token={self.token}", timeout=30) as r:
            return json.load(r)

    def post(self, path: str, body: dict):
        req = urllib.request.Request(f"{self.base}/{path}?token={self.token}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.load(r)

    def wait_for_kernel(self, kernel_id: str, timeout_s: float = 120) -> None:
        """Until the kernel answers a kernel_info request (through its connection file, as a client would)."""
        from jupyter_client import BlockingKernelClient
        from jupyter_core.paths import jupyter_runtime_dir

        path = Path(self.env.get("JUPYTER_RUNTIME_DIR") or jupyter_runtime_dir()) / f"kernel-{kernel_id}.json"
        client = BlockingKernelClient(connection_file=str(path))
        client.load_connection_file()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=timeout_s)
        finally:
            client.stop_channels()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def printed_url(self) -> str:
        """The URL the command printed for the student to open (token filled in)."""
        m = re.search(rf"(http://127\.0\.0\.1:{self.port}/\S*)", self.output())
        assert m, f"the lab command printed no URL:\n{self.output()}"
        return m.group(1).replace("token=...", f"token={self.token}")


# Installed into the page once per notebook: counts the kernel's messages so "done" means every request this page
# sent was answered and the kernel is idle. Errors are collected as the kernel sends them, so an error shown for a
# moment (a widget output cleared by the next slider move) is still seen.
_WATCH = """async () => {
  const panel = window.jupyterapp.shell.currentWidget;
  await panel.context.ready;
  await panel.sessionContext.ready;
  const st = {pending: new Map(), sent: 0, requests: 0, errors: [], stderr: []};
  const hook = (kernel) => {
    if (!kernel) return;
    st.kernel = kernel;
    if (kernel.__courseWatched) return;  // one listener per kernel; it reports to whichever watcher is current
    kernel.__courseWatched = true;
    kernel.anyMessage.connect((_, {msg, direction}) => {
      const st = window.__course;
      if (!st || st.kernel !== kernel) return;
      if (direction === 'send') {
        if (msg.channel === 'shell') {
          st.pending.set(msg.header.msg_id, msg.header.msg_type);
          st.sent += 1;
        }
        if (msg.header.msg_type === 'execute_request') st.requests += 1;
        return;
      }
      // a request the kernel aborted (after an error, with stop_on_error) gets a reply but no idle status
      if (msg.channel === 'shell' && msg.content.status === 'aborted') st.pending.delete(msg.parent_header.msg_id);
      if (msg.channel !== 'iopub') return;
      const type = msg.header.msg_type;
      if (type === 'status' && msg.content.execution_state === 'idle') st.pending.delete(msg.parent_header.msg_id);
      if (type === 'error') st.errors.push(`${msg.content.ename}: ${msg.content.evalue}`);
      if (type === 'stream' && msg.content.name === 'stderr') st.stderr.push(msg.content.text);
    });
  };
  panel.sessionContext.kernelChanged.connect((_, change) => { if (window.__course === st) hook(change.newValue); });
  hook(panel.sessionContext.session && panel.sessionContext.session.kernel);
  st.settled = () => {
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    if (!kernel || kernel.status !== 'idle' || st.pending.size) return false;
    const cells = panel.content.model.cells;
    for (let i = 0; i < cells.length; i++) if (cells.get(i).executionState === 'running') return false;
    return true;
  };
  st.until = async (ok, ms, what) => {
    const end = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > end) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
      await new Promise(resolve => setTimeout(resolve, 5));
    }
  };
  window.__course = st;
}"""

_SETTLED = "() => window.__course.settled()"

# One slider, with the keys a student would press: Home, then ArrowRight (one step) through every position, or
# for a slider with more than `most` positions PageUp (noUiSlider's page: 5 steps) to the end, a dense sample.
# In the page itself: a round trip from Python per step would cost more than the step. After each key: wait until
# the move reached the kernel, then until the kernel is idle again; then note the value sent and any errors.
_SWEEP_SLIDER = """async (handle, most) => {
  const st = window.__course, api = handle.closest('.noUi-target').noUiSlider, o = api.options;
  const n = Math.round((o.range.max - o.range.min) / o.step) + 1;
  const key = n <= most ? 'ArrowRight' : 'PageUp';
  const press = async (key) => {
    const before = st.sent;
    handle.dispatchEvent(new KeyboardEvent('keydown', {key, bubbles: true, cancelable: true}));
    try { await st.until(() => st.sent > before, 5000, 'the move to reach the kernel'); } catch (e) { /* no change */ }
    await st.until(st.settled, 60000, 'the kernel to finish');
  };
  const seen = [], errors = [];
  await press('Home');
  while (true) {
    seen.push(handle.getAttribute('aria-valuetext'));  // the exact number sent: 6.999999999999999 for 7.0, say
    for (const e of st.errors.splice(0)) errors.push([seen[seen.length - 1], e]);
    if (Number(api.get()) >= o.range.max || seen.length > n) break;
    await press(key);
  }
  return {positions: n, visited: seen.length, errors};
}"""

_STATE = """() => {
  const st = window.__course, panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.model.cells, running = [];
  for (let i = 0; i < cells.length; i++) if (cells.get(i).executionState === 'running') running.push(i);
  return {path: panel.context.path, kernel: kernel && kernel.status, pending: st ? Array.from(st.pending.values()) : null,
          requests: st && st.requests, running};
}"""

_REPORT = """() => {
  const panel = window.jupyterapp.shell.currentWidget, cells = panel.content.model.cells, node = panel.node;
  const code = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    const outputs = [];
    for (let j = 0; j < c.outputs.length; j++) outputs.push(c.outputs.get(j).toJSON());
    code.push({index: i, count: c.executionCount, empty: !c.sharedModel.getSource().trim(), outputs});
  }
  return {
    path: panel.context.path, code,
    images: Array.from(node.querySelectorAll('.jp-OutputArea img')).map(
      img => ({ok: img.complete && img.naturalWidth > 0, src: img.src.slice(0, 40)})),
    // textContent, not innerText: cells scrolled out of view are not rendered but their text is there
    outputText: Array.from(node.querySelectorAll('.jp-OutputArea-output')).filter(
      o => !o.querySelector('.jp-OutputArea-output')).map(o => o.textContent),  // innermost: a widget's own output
    text: node.textContent,
    headings: Array.from(node.querySelectorAll('.jp-MarkdownOutput h1, .jp-MarkdownOutput h2')).map(
      h => h.textContent.replace(/¶$/, '').trim()),
    widgets: node.querySelectorAll('.jp-OutputArea .jupyter-widgets.widget-container, .jp-OutputArea .widget-interact').length,
    kernelErrors: window.__course.errors.slice(), stderr: window.__course.stderr.slice(),
  };
}"""


class LabPage:
    """One browser page on a LabServer; opens notebooks one after another in it."""

    def __init__(self, page, server: LabServer, timeout_s: float = 600, slider_positions: int = 60):
        self.page, self.server, self.timeout_ms = page, server, timeout_s * 1000
        self.slider_positions = slider_positions  # sliders with more positions are sampled every 5 steps

    def goto(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_function("() => window.jupyterapp", timeout=120_000)
        self.page.evaluate("() => window.jupyterapp.restored")
        self.page.wait_for_function("() => { const w = window.jupyterapp.shell.currentWidget; return w && w.context }",
                                    timeout=120_000)

    def open(self, path: str) -> None:
        """Open a notebook (File Browser's double click does the same command) and wait for an idle kernel."""
        self.page.evaluate("async p => { await window.jupyterapp.commands.execute('docmanager:open', {path: p}); }",
                           path)
        self.page.wait_for_function(
            "p => { const w = window.jupyterapp.shell.currentWidget; return w && w.context && w.context.path === p }",
            arg=path, timeout=60_000)
        self.watch()

    def watch(self) -> None:
        self.page.evaluate(_WATCH)
        self.wait_settled(120_000)

    def wait_settled(self, timeout_ms: float | None = None) -> None:
        """Until every message this page sent to the kernel is answered, the kernel is idle and no cell runs."""
        from playwright.sync_api import TimeoutError

        try:
            self.page.wait_for_function(_SETTLED, timeout=timeout_ms or self.timeout_ms, polling=50)
        except TimeoutError:
            state = self.page.evaluate(_STATE)
            raise TimeoutError(f"the notebook did not settle within {(timeout_ms or self.timeout_ms) / 1000:.0f} s: "
                               f"{state}") from None

    def menu(self, *items: str) -> None:
        """Click through the menu bar: menu("Kernel", "Restart Kernel and Run All Cells…")."""
        self.page.locator("#jp-menu-panel").get_by_role("menuitem", name=items[0], exact=True).click()
        for item in items[1:]:
            self.page.locator(".lm-Menu").get_by_role("menuitem", name=item).click()

    def restart_and_run_all(self) -> float:
        """Kernel > Restart Kernel and Run All Cells…, confirm, wait until it is done. Returns the seconds it took."""
        self.page.evaluate("() => { window.__course.requests = 0; window.__course.errors = []; "
                           "window.__course.stderr = []; }")
        self.menu("Kernel", "Restart Kernel and Run All Cells…")
        self.page.locator(".jp-Dialog .jp-mod-accept").click()  # "Restart"
        t0 = time.perf_counter()
        self.page.wait_for_function("() => window.__course.requests > 0", timeout=60_000, polling=50)
        self.wait_settled()
        return time.perf_counter() - t0

    def run_cell(self, index: int, source: str | None = None) -> str:
        """Select cell `index` (optionally replacing its source, as a student typing would), run it with
        Run > Run Selected Cell, wait for the kernel; returns everything the cell printed, errors included."""
        self.page.evaluate("""([i, src]) => {
          const nb = window.jupyterapp.shell.currentWidget.content;
          if (src !== null) nb.model.cells.get(i).sharedModel.setSource(src);
          nb.activeCellIndex = i;
          nb.deselectAll();
        }""", [index, source])
        self.page.evaluate("async () => { window.__course.requests = 0; "
                           "await window.jupyterapp.commands.execute('notebook:run-cell'); }")
        self.page.wait_for_function("() => window.__course.requests > 0", timeout=60_000, polling=20)
        self.wait_settled()
        outputs = self.page.evaluate(r"""i => {
          const outs = window.jupyterapp.shell.currentWidget.content.model.cells.get(i).outputs, texts = [];
          for (let j = 0; j < outs.length; j++) {
            const o = outs.get(j).toJSON();
            texts.push(o.output_type === 'error' ? `${o.ename}: ${o.evalue}\n${o.traceback.join('\n')}`
                       : o.text !== undefined ? [].concat(o.text).join('') : JSON.stringify(o.data || {}));
          }
          return texts.join('\n');
        }""", index)
        return re.sub(r"\x1b\[[0-9;]*m", "", outputs)  # no terminal colours

    def report(self) -> dict:
        return self.page.evaluate(_REPORT)

    def close(self) -> None:
        """Shut the notebook's kernel down and close its tab (frees the memory before the next chapter)."""
        self.page.evaluate("""async () => {
          const panel = window.jupyterapp.shell.currentWidget;
          await panel.sessionContext.shutdown();
          panel.dispose();
        }""")

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def sweep_widgets(self) -> dict:
        """Move every control of every widget in the notebook through its positions (sliders with the keyboard, as a
        student's keys do: every step, or every 5th above `slider_positions`; dropdowns and toggle buttons: every
        option), waiting for the kernel after each move.
        Returns {control label: {"positions": n, "visited": k, "errors": [(value sent, error), ...]}}."""
        out = {}
        self._drain()  # errors of the run itself are the chapter check's business
        area = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea")
        for box in area.locator(".widget-slider, .widget-dropdown, .widget-toggle-buttons").all():
            label = box.locator(".widget-label").first.text_content().strip() or "(no label)"
            box.scroll_into_view_if_needed()
            if "widget-slider" in box.get_attribute("class"):
                out[label] = self._sweep_slider(box.locator(".noUi-handle").first)
            elif "widget-dropdown" in box.get_attribute("class"):
                select = box.locator("select")
                out[label] = self._sweep(lambda i: select.select_option(index=i), select.locator("option").count(),
                                         lambda: select.input_value())
            else:
                buttons = box.locator("button")
                out[label] = self._sweep(lambda i: buttons.nth(i).click(), buttons.count(),
                                         lambda: box.locator("button.mod-active").text_content())
        return out

    def _drain(self) -> list[str]:
        """The kernel errors seen since the last call."""
        return self.page.evaluate("() => window.__course.errors.splice(0)")

    def _sweep(self, move, n: int, value) -> dict:
        errors = []
        for i in range(n):
            move(i)
            self.wait_settled(60_000)
            errors += [(value(), e) for e in self._drain()]
        return {"positions": n, "visited": n, "errors": errors}

    def _sweep_slider(self, handle) -> dict:
        return handle.evaluate(_SWEEP_SLIDER, self.slider_positions)
