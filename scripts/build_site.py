"""Build a static HTML site of the course's chapters, to read without running anything (`make site`).

    python scripts/build_site.py                  # -> build/site/index.html
    python scripts/build_site.py --out /tmp/site

It renders the reference edition, solutions/notebooks/NN_*.ipynb (executed, model answers filled in), or, where
that folder does not exist, notebooks/NN_*.ipynb, with nbconvert: every stored output and plot, in chapter order, an
index page and previous / index / next links on every chapter. Interactive widgets need a kernel, so each is
replaced by a note; every explorer shows a static figure of the same trade-off just above it. Links to other
chapters point at their pages; links to other files of the repository become plain text naming the file.
Nothing is executed and nothing is fetched.
"""
from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "build" / "site"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ("<p class='site-note'><em>Interactive explorer: open this chapter in JupyterLab (<code>make lab</code>) "
               "to move its controls. The figure above shows the same trade-off.</em></p>")
STYLE = """<style>
.site-nav { display: flex; justify-content: space-between; max-width: 1100px; margin: 0.6em auto; padding: 0.4em 1em;
            font: 15px/1.4 system-ui, sans-serif; border-bottom: 1px solid #ddd; }
.site-nav a { text-decoration: none; } .site-nav span.off { color: #aaa; }
.site-note { color: #555; }
</style>"""


def chapter_sources() -> tuple[Path, list[Path]]:
    """(folder, chapters in order): the reference edition where it exists, else the notebooks students open."""
    for folder in (ROOT / "solutions" / "notebooks", ROOT / "notebooks"):
        chapters = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
        if chapters:
            return folder, chapters
    raise SystemExit("no chapters found in solutions/notebooks/ or notebooks/. Fix: run this from the course repo.")


def title_of(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    return "untitled"


def without_widgets(nb):
    """Widget views need a kernel: replace each by a note (and drop the stored widget state nbconvert would embed)."""
    import nbformat

    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            if WIDGET_MIME in out.get("data", {}):
                if not any(o.get("data", {}).get("text/html") == WIDGET_NOTE for o in outputs):
                    outputs.append(nbformat.v4.new_output("display_data", data={"text/html": WIDGET_NOTE}))
            else:
                outputs.append(out)
        cell.outputs = outputs
    return nb


def nav(chapters: list[tuple[str, str]], i: int) -> str:
    def link(j, label):
        if 0 <= j < len(chapters):
            return f'<a href="{chapters[j][0]}">{label} {html.escape(chapters[j][1])}</a>'
        return f'<span class="off">{label}</span>'

    return (f'<nav class="site-nav">{link(i - 1, "&larr;")}<a href="index.html">all chapters</a>'
            f'{link(i + 1, "&rarr;")}</nav>')


LINK = re.compile(r'<a(?P<pre>[^>]*?)\shref="(?P<href>[^"]*)"(?P<post>[^>]*)>(?P<text>.*?)</a>', re.S)


def fix_links(body: str, pages: dict[str, str]) -> str:
    """Chapter links -> their pages; links into the repository -> plain text; web links and #anchors unchanged."""
    def repl(m):
        if re.match(r"(https?:|mailto:|#|data:)", m["href"]):
            return m[0]
        path, _, frag = m["href"].partition("#")
        page = pages.get(Path(path).name)
        if page:
            return f'<a{m["pre"]} href="{page}{"#" + frag if frag else ""}"{m["post"]}>{m["text"]}</a>'
        return f'<span title="in the course repository: {html.escape(path)}">{m["text"]}</span>'

    return LINK.sub(repl, body)


def build(out: Path = DEFAULT_OUT) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    folder, sources = chapter_sources()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.html"):
        old.unlink()
    nbs = [nbformat.read(p, as_version=4) for p in sources]
    chapters = [(f"{p.stem}.html", title_of(nb)) for p, nb in zip(sources, nbs)]
    pages = {p.name: f"{p.stem}.html" for p in sources}
    exporter = HTMLExporter(template_name="lab")
    for i, (nb, (page, title)) in enumerate(zip(nbs, chapters)):
        body, _ = exporter.from_notebook_node(without_widgets(nb), resources={"metadata": {"name": title}})
        body = fix_links(body, pages)
        body = body.replace("</head>", STYLE + "</head>", 1)
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav(chapters, i), body, count=1)
        body = body.replace("</body>", nav(chapters, i) + "</body>", 1)
        (out / page).write_text(body)
    items = "\n".join(f'<li><a href="{page}">{html.escape(title)}</a></li>' for page, title in chapters)
    edition = "reference edition, with outputs and model answers" if folder.parent.name == "solutions" else \
        "with the outputs stored in the notebooks"
    (out / "index.html").write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>LoRA &amp; QLoRA: the chapters</title>{STYLE}"
        "</head><body style='font: 16px/1.5 system-ui, sans-serif; max-width: 800px; margin: 2em auto'>"
        f"<h1>LoRA &amp; QLoRA: fine-tuning when you don't have infinite GPUs</h1>"
        f"<p>The chapters, to read ({edition}). To run them and answer the exercises yourself: "
        f"<code>make lab</code> in the course repository.</p><ul>{items}</ul></body></html>\n")
    return out / "index.html"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    index = build(ap.parse_args(argv).out)
    print(f"site: {index} ({len(list(index.parent.glob('*.html'))) - 1} chapters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
