"""The report's HTML: one page, its style inline, no script and nothing fetched from elsewhere; the PNGs sit
beside it in ``figures/`` (relative links), so the folder can be copied, zipped or opened from disk."""

from __future__ import annotations

import datetime as _dt
import html
import os
from pathlib import Path

from memsel.files import write_text_atomic

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 1.5rem 2rem 4rem; color: #1d1d1f; background: #fff; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; padding-bottom: 0.3rem; }
.meta { color: #555; font-size: 0.92rem; }
.meta td { padding: 0.1rem 1rem 0.1rem 0; vertical-align: top; }
nav a { margin-right: 1.2rem; }
.figures { display: flex; flex-wrap: wrap; gap: 0 2rem; align-items: flex-start; }
figure { margin: 1.2rem 0 2rem; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; margin-top: 0.3rem; }
pre { background: #f6f8fa; padding: 0.8rem 1rem; overflow-x: auto; font-size: 0.85rem; border-radius: 4px; }
table.runs { border-collapse: collapse; font-size: 0.85rem; }
table.runs th, table.runs td { border-bottom: 1px solid #eee; padding: 0.2rem 0.8rem 0.2rem 0; text-align: left; }
code { font-size: 0.9em; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def _meta(col) -> str:
    dirs = col.run_dirs()
    rows = [("experiment", col.experiment), ("MLflow", col.tracking_uri), ("runs", len(col.runs)),
            ("seeds", ", ".join(col.seeds())), ("run folders", ", ".join(map(str, dirs)) or "none found here"),
            ("written", _dt.datetime.now().strftime("%Y-%m-%d %H:%M"))]
    return "<table class='meta'>" + "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>"
                                            for k, v in rows) + "</table>"


def _runs_table(col) -> str:
    body = "".join(f"<tr><td>{_e(r.name)}</td><td>{_e(r.role)}</td><td>{_e(r.seed)}</td><td><code>{_e(r.run_id)}</code>"
                   f"</td></tr>" for r in col.runs)
    return ("<details><summary>MLflow runs in this report</summary><table class='runs'><tr><th>run</th><th>role</th>"
            f"<th>seed</th><th>run id</th></tr>{body}</table></details>")


def _section(sec, page_dir: Path) -> str:
    parts = [f"<h2 id='{_anchor(sec.title)}'>{_e(sec.title)}</h2>"]
    if sec.intro:
        parts.append(f"<p>{_e(sec.intro)}</p>")
    for title, text in sec.texts:
        parts.append(f"<h3>{_e(title)}</h3><pre>{_e(text)}</pre>")
    parts.append("<div class='figures'>")
    for fig in sec.figures:
        src = Path(os.path.relpath(fig.path, page_dir)).as_posix()
        caption = _e(fig.title) + (f" &mdash; {_e(fig.caption)}" if fig.caption else "")
        parts.append(f"<figure><img src='{_e(src)}' alt='{_e(fig.title)}' loading='eager'>"
                     f"<figcaption>{caption}</figcaption></figure>")
    parts.append("</div>")
    return "\n".join(parts)


def render(path: Path, title: str, col, sections: list) -> str:
    """The page's HTML (figures linked relative to ``path``'s folder)."""
    nav = "".join(f"<a href='#{_anchor(s.title)}'>{_e(s.title)}</a>" for s in sections)
    body = "\n".join(_section(s, Path(path).parent) for s in sections)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
            f"<link rel='icon' href='data:,'><style>{STYLE}</style></head>\n<body><h1>{_e(title)}</h1>{_meta(col)}"
            f"<nav>{nav}</nav>{_runs_table(col)}\n{body}\n</body></html>\n")


def write_page(path: Path, title: str, col, sections: list) -> Path:
    """Write the page atomically; returns its path."""
    return write_text_atomic(path, render(path, title, col, sections))
