"""The static HTML of ``interp report``: one page, inline CSS, no script beyond a self-check, no
network.  Every text is escaped (:func:`esc`); markup built here is :class:`Html` and passes
through unescaped.

    body = [kv([("checkpoint", path)]), gallery([figure("assets/01/grid.png", "grid")])]
    page("interp report", [Section("explain", "out/e1", body)])

The layout is responsive: galleries are CSS grids that wrap to one column on a phone (390 px),
image tables shrink their pictures to the width, and wide text tables scroll inside their own
box, so the page itself never scrolls sideways.

**Self-check**: on ``load`` a small inline script counts the images that did not load
(``naturalWidth == 0``) and whether the page is wider than the window, and records them on
``<body>`` as ``data-images``, ``data-broken-images``, ``data-overflow`` (``yes``/``no``) and
``data-check="done"`` (also shown in the footer).  ``chromium --headless --dump-dom`` prints them.
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

__all__ = ["Html", "Section", "esc", "join", "kv", "table", "image_table", "figure", "gallery", "link", "note",
           "details", "page", "url", "CSS", "SELF_CHECK"]


class Html(str):
    """Markup built by this module: :func:`esc` leaves it as it is."""


def esc(v: Any) -> Html:
    """Text as HTML (``<``, ``>``, ``&``, quotes escaped); :class:`Html` unchanged; None as empty."""
    if isinstance(v, Html):
        return v
    if v is None:
        return Html("")
    if not isinstance(v, str):
        v = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return Html(html.escape(v, quote=True))


def join(parts: Iterable[Any], sep: str = "") -> Html:
    return Html(sep.join(esc(p) for p in parts))


def url(rel: str) -> str:
    """A relative path as a URL (each part percent-encoded, ``/`` kept)."""
    return quote(rel.replace("\\", "/"), safe="/")


def link(href: str, text: Any) -> Html:
    return Html(f'<a href="{esc(href)}">{esc(text)}</a>')


def note(text: Any) -> Html:
    return Html(f'<p class="note">{esc(text)}</p>')


def kv(items: Iterable[tuple[str, Any]]) -> Html:
    """A definition list (key: value), values in a monospace font; empty values (None, "", [], {})
    left out."""
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items
                   if v is not None and not (isinstance(v, (str, list, tuple, dict)) and not v))
    return Html(f'<dl class="kv">{rows}</dl>') if rows else Html("")


def table(rows: Sequence[Mapping[str, Any]], caption: str = "", numeric: Sequence[str] = ()) -> Html:
    """A text table (header from the first row's keys) in a box that scrolls sideways when wide."""
    if not rows:
        return Html("")
    cols = list(rows[0])
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    num = ' class="num"'
    body = "".join("<tr>" + "".join(f"<td{num if c in numeric else ''}>{esc(r.get(c, ''))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return Html(f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')


def _img(src: str, alt: str) -> str:
    return f'<a href="{esc(src)}"><img src="{esc(src)}" alt="{esc(alt)}"></a>'


def image_table(columns: Sequence[str], rows: Sequence[tuple[Any, Sequence[str | None]]],
                label_width: int = 18) -> Html:
    """Pictures in a grid of rows (e.g. images) x columns (e.g. methods): ``rows`` holds each row's
    label and one image URL (or None) per column.  The table is as wide as the page, the pictures
    shrink with it."""
    cols = f'<col style="width:{label_width}%">' + "".join("<col>" for _ in columns)
    head = "<th></th>" + "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr><th>" + esc(label) + "</th>" + "".join(
        f"<td>{_img(src, f'{label} {c}') if src else '—'}</td>" for c, src in zip(columns, srcs)) + "</tr>"
        for label, srcs in rows)
    return Html(f'<table class="images"><colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")


def figure(src: str, caption: Any = "", alt: str = "") -> Html:
    """One picture (a link to itself, full size) with a caption."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return Html(f"<figure>{_img(src, alt or str(caption) or src)}{cap}</figure>")


def gallery(figures: Sequence[Html], wide: bool = False) -> Html:
    """Figures in a grid that wraps (one column on a phone); ``wide``: one per row."""
    if not figures:
        return Html("")
    return Html(f'<div class="gallery{" wide" if wide else ""}">{"".join(figures)}</div>')


def details(summary: Any, content: Html) -> Html:
    return Html(f"<details><summary>{esc(summary)}</summary>{content}</details>")


@dataclasses.dataclass
class Section:
    """One part of the page: a ``kind`` (explain, consistency, ...), its ``source`` folder or file,
    the ``provenance`` (key, value) pairs, the ``body`` (markup) and the ``files`` it shows."""

    kind: str
    source: str
    body: list[Html] = dataclasses.field(default_factory=list)
    provenance: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    files: list[str] = dataclasses.field(default_factory=list)
    anchor: str = ""

    def html(self) -> Html:
        prov = kv(self.provenance)
        prov = Html(f'<div class="prov"><h3>Provenance</h3>{prov}</div>') if prov else prov
        return Html(f'<section id="{esc(self.anchor)}"><h2><span class="kind">{esc(self.kind)}</span>'
                    f"<code>{esc(self.source)}</code></h2>{prov}{''.join(self.body)}</section>")


CSS = """
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg2:#f6f8fa;--accent:#0969da}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0 auto;max-width:1280px;padding:0 16px 48px;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
  sans-serif;color:var(--fg);background:#fff;overflow-wrap:anywhere}
a{color:var(--accent)}
header{padding:16px 0 8px;border-bottom:2px solid var(--line)}
h1{font-size:1.5rem;margin:0 0 4px}
h2{font-size:1.15rem;margin:0 0 8px}
h3{font-size:1rem;margin:14px 0 6px}
nav ul{display:flex;flex-wrap:wrap;gap:4px 16px;padding:0;margin:8px 0;list-style:none;font-size:.9rem}
section{margin:20px 0;padding:14px 16px;border:1px solid var(--line);border-radius:8px}
.kind{display:inline-block;font-size:.72rem;text-transform:uppercase;letter-spacing:.04em;background:var(--bg2);
  border:1px solid var(--line);border-radius:4px;padding:1px 6px;margin-right:8px;color:var(--muted);
  vertical-align:middle}
.prov{background:var(--bg2);border-radius:6px;padding:2px 10px;margin:6px 0 10px}
.prov h3{font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:6px 0 2px}
dl.kv{display:grid;grid-template-columns:minmax(0,max-content) minmax(0,1fr);gap:2px 12px;margin:6px 0;
  font-size:.85rem}
dl.kv dt{color:var(--muted)}
dl.kv dd{margin:0;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre-wrap}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,340px),1fr));gap:14px;margin:8px 0}
.gallery.wide{grid-template-columns:minmax(0,1fr)}
figure{margin:0;min-width:0}
figure img{display:block;max-width:100%;height:auto;border:1px solid var(--line);background:#fff}
figcaption{font-size:.8rem;color:var(--muted);margin-top:4px}
.scroll{overflow-x:auto;max-width:100%;margin:6px 0}
table{border-collapse:collapse;font-size:.84rem}
.scroll table{overflow-wrap:normal}  /* words whole: a wide table scrolls in its box */
caption{text-align:left;font-weight:600;padding:2px 0}
th,td{border:1px solid var(--line);padding:3px 7px;text-align:left;vertical-align:top}
thead th{background:var(--bg2)}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.images{table-layout:fixed;width:100%}
table.images th,table.images td{padding:2px;font-size:.75rem;font-weight:normal}
table.images tbody th{white-space:pre-line}
table.images img{display:block;max-width:100%;height:auto}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em}
.note{color:var(--muted);font-size:.85rem}
.bad{color:#cf222e;font-weight:600}
footer{margin-top:28px;color:var(--muted);font-size:.8rem}
@media (max-width:600px){body{padding:0 8px 32px;font-size:14px}section{padding:10px 8px}
  dl.kv{grid-template-columns:minmax(0,1fr)}dl.kv dd{margin-bottom:4px}}
"""

SELF_CHECK = """
window.addEventListener("load", function () {
  var imgs = document.images, broken = 0;
  for (var i = 0; i < imgs.length; i++) { if (!imgs[i].complete || imgs[i].naturalWidth === 0) broken++; }
  var root = document.documentElement, d = document.body.dataset;
  d.images = imgs.length; d.brokenImages = broken;
  d.overflow = root.scrollWidth > root.clientWidth ? "yes" : "no";
  d.check = "done";
  var s = document.getElementById("self-check");
  if (s) { s.textContent = broken ? broken + " of " + imgs.length + " images did not load"
                                  : "all " + imgs.length + " images loaded";
           if (broken) s.className = "bad"; }
});
"""


def page(title: str, sections: Sequence[Section], header: Iterable[tuple[str, Any]] = ()) -> str:
    """The whole page: a header (title, ``header`` pairs), a table of contents, the sections, and
    the self-check (see the module doc)."""
    for i, s in enumerate(sections, 1):
        s.anchor = s.anchor or f"s{i}"
    toc = "".join(f'<li><a href="#{esc(s.anchor)}">{esc(s.kind)}: {esc(s.source)}</a></li>' for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>"
            f"<header><h1>{esc(title)}</h1>{kv(header)}<nav><ul>{toc}</ul></nav></header>\n"
            + "\n".join(s.html() for s in sections)
            + "\n<footer><p>Self-contained: every picture is in <code>assets/</code> beside this page, linked "
              "relatively; no network. Self-check: <span id=\"self-check\">images not checked yet</span>.</p>"
              f"</footer>\n<script>{SELF_CHECK}</script>\n</body></html>\n")
