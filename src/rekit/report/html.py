"""A self-contained HTML page: inline CSS, images as base64 data: URIs, no scripts, no external assets.

Every piece of text goes through `html.escape`; callers pass plain strings, never markup (the one
exception, `Page.raw`, takes fragments built here, e.g. by `highlight`).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans CJK KR", sans-serif;
       margin: 24px auto; max-width: 1180px; color: #222; line-height: 1.4; padding: 0 12px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; background: #fafafa; }
img { max-width: 100%; display: block; margin: 8px 0; border: 1px solid #eee; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 0.85em; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 10px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card b { display: block; font-size: 1.4em; }
mark.subj { background: #cfe3ff; border-bottom: 2px solid #2a6fdb; }
mark.obj { background: #ffe0c2; border-bottom: 2px solid #e07b00; }
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def highlight(sentence: str, spans: Sequence[tuple[int, int, str, str]]) -> str:
    """`sentence` with each (start, end, css class, title) span wrapped in <mark>; overlapping spans
    after the first are left plain."""
    out, pos = [], 0
    for start, end, cls, title in sorted(spans):
        if start < pos or not 0 <= start < end <= len(sentence):
            continue
        out.append(esc(sentence[pos:start]))
        out.append(f'<mark class="{esc(cls)}" title="{esc(title)}">{esc(sentence[start:end])}</mark>')
        pos = end
    out.append(esc(sentence[pos:]))
    return "".join(out)


class Page:
    def __init__(self, title: str, subtitle: str = ""):
        self.title, self.parts = title, [f"<h1>{esc(title)}</h1>"]
        if subtitle:
            self.parts.append(f'<p class="sub">{esc(subtitle)}</p>')

    def h2(self, text: str, anchor: str = "") -> None:
        self.parts.append(f'<h2 id="{esc(anchor)}">{esc(text)}</h2>' if anchor else f"<h2>{esc(text)}</h2>")

    def p(self, text: str) -> None:
        self.parts.append(f"<p>{esc(text)}</p>")

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{esc(text)}</p>')

    def cards(self, items: Sequence[tuple[str, str]]) -> None:
        cells = "".join(f'<div class="card">{esc(k)}<b>{esc(v)}</b></div>' for k, v in items)
        self.parts.append(f'<div class="cards">{cells}</div>')

    def table(self, header: Sequence[str], rows: Sequence[Sequence], total_last: bool = False,
              raw_cols: Sequence[int] = ()) -> None:
        """Numbers are right-aligned; columns in `raw_cols` hold markup made by `highlight`."""
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        body = []
        for i, row in enumerate(rows):
            cells = []
            for j, cell in enumerate(row):
                if j in raw_cols:
                    cells.append(f"<td>{cell}</td>")
                elif isinstance(cell, (int, float)) and not isinstance(cell, bool):
                    cells.append(f'<td class="num">{esc(_num(cell))}</td>')
                else:
                    cells.append(f"<td>{esc(cell)}</td>")
            cls = ' class="total"' if total_last and i == len(rows) - 1 else ""
            body.append(f"<tr{cls}>{''.join(cells)}</tr>")
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")

    def image(self, png: bytes, alt: str) -> None:
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">')

    def pre(self, text: str) -> None:
        self.parts.append(f"<pre>{esc(text)}</pre>")

    def raw(self, fragment: str) -> None:
        self.parts.append(fragment)

    def render(self) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(self.title)}"
                f"</title><style>{CSS}</style></head><body>\n" + "\n".join(self.parts) + "\n</body></html>\n")


def _num(x: float) -> str:
    if isinstance(x, int):
        return f"{x:,}"
    if x != x:  # nan
        return "-"
    return f"{x:.4f}" if abs(x) < 1 else f"{x:.2f}"
