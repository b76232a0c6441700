"""`make site`: the chapters as static HTML, in order, with their plots and working links between pages."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_site.py"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Warning" not in run.stderr, run.stderr
    return out


def chapters() -> list[Path]:
    folder = ROOT / "solutions" / "notebooks"
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    return found or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_every_chapter_has_a_page_in_order(site):
    index = (site / "index.html").read_text()
    pages = re.findall(r'href="(\d\d_[^"]+\.html)"', index)
    assert pages == [f"{p.stem}.html" for p in chapters()]
    for page in pages:
        text = (site / page).read_text()
        assert "<img" in text or page.startswith("00"), f"{page} shows no plot"


def test_every_internal_link_resolves(site):
    broken = []
    for page in sorted(site.glob("*.html")):
        text = page.read_text()
        ids = set(re.findall(r'\sid="([^"]+)"', text))
        for href in re.findall(r'<a[^>]*\shref="([^"]*)"', text):
            if re.match(r"(https?:|mailto:|data:)", href):
                continue
            path, _, frag = href.partition("#")  # nbconvert writes ids percent-encoded, as its links are
            target = site / unquote(path) if path else page
            if not target.is_file():
                broken.append(f"{page.name}: {href} (no such page)")
            elif frag and frag not in (ids if target == page else set(re.findall(r'\sid="([^"]+)"', target.read_text()))):
                broken.append(f"{page.name}: {href} (no such anchor)")
    assert not broken, "\n".join(broken[:20])


def test_chapters_link_to_their_neighbours(site):
    names = [f"{p.stem}.html" for p in chapters()]
    for i, name in enumerate(names):
        text = (site / name).read_text()
        assert 'href="index.html"' in text
        if i + 1 < len(names):
            assert f'href="{names[i + 1]}"' in text, f"{name} does not link to the next chapter"


def test_widgets_become_a_note_not_a_repr(site):
    for page in site.glob("[0-9][0-9]_*.html"):
        text = page.read_text()
        assert "widget-view+json" not in text and "VBox(children" not in text, page.name
