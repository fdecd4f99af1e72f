"""Static HTML pieces: escaped tables and a page shell (no external resources; the only script is
the inline 3D viewer, ``scene3d``)."""
from __future__ import annotations

import html
from typing import Callable, Optional, Sequence
from urllib.parse import quote

from memposer.report.tables import fmt

CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f0f0f0; }
td.name, th.name { text-align: left; }
td.pass { background: #c7eac7; } td.fail { background: #f4c7c3; }
td.assoc { background: #c6dbef; font-weight: bold; } td.zero { color: #bbb; }
th.skip { color: #999; font-weight: normal; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.3em 0; }
canvas.mp3d { border: 1px solid #ddd; display: block; cursor: grab; }
.muted { color: #777; font-size: 12px; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 2px; margin-top: 1.6em; }
"""


def esc(x) -> str:
    return html.escape(fmt(x, 4) if not isinstance(x, str) else x)


def href(path: str) -> str:
    """A relative path made safe for ``href``/``src`` (each segment percent-encoded)."""
    return "/".join(quote(p) for p in path.split("/"))


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def table(header: Sequence[str], rows: Sequence[Sequence], cell_class: Optional[Callable[[int, int, object], str]] = None,
          header_class: Optional[Callable[[int, str], str]] = None, name_cols: int = 1) -> str:
    """An HTML table; the first ``name_cols`` columns left-aligned; ``cell_class(i, j, v)`` styles cells."""
    out = ["<table>", "<tr>"]
    for j, h in enumerate(header):
        cls = header_class(j, h) if header_class else ("name" if j < name_cols else "")
        out.append(f'<th class="{cls}">{esc(h)}</th>' if cls else f"<th>{esc(h)}</th>")
    out.append("</tr>")
    for i, row in enumerate(rows):
        out.append("<tr>")
        for j, v in enumerate(row):
            cls = (cell_class(i, j, v) if cell_class else "") or ("name" if j < name_cols else "")
            out.append(f'<td class="{cls}">{esc(v)}</td>' if cls else f"<td>{esc(v)}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "\n".join(out)


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
