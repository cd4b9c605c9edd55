"""``albums/index.html``: the albums as a person sees them, one row of faces per person.

Self-contained: no network, no script or style from elsewhere. The thumbnails are the aligned
crops and the links are the source photos, both by paths relative to the page, so the page
opens from the file system (and keeps working when the folder holding the photos, the crops
and the page is moved as a whole). With an old model, each old album sits beside the new
model's album that continues it, flagged as the release gate would: mixed, split, disappeared.
"""

from __future__ import annotations

import html
import os
from urllib.parse import quote

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 6px}
.meta{color:#555;margin:0 0 10px}
.album{display:flex;align-items:center;gap:10px;background:#fff;border:1px solid #ddd;border-radius:6px;
 padding:6px;margin:4px 0;min-height:64px}
.label{width:120px;flex:none}.label b{display:block}.counts{color:#666;font-size:12px}
.faces{display:flex;flex-wrap:wrap;gap:3px}
.faces img{width:56px;height:56px;border-radius:3px;display:block;border:2px solid transparent}
.faces img.foreign{border-color:#d33}.faces img.missing{border-color:#999;background:#eee}
.unsorted{opacity:.75}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:8px}.pair>.album{margin:4px 0}
.pair.mixed>.album,.pair.split>.album,.pair.disappeared>.album{border-width:2px}
.pair.mixed>.album{border-color:#e08a00}.pair.split>.album{border-color:#7a3fc4}
.pair.disappeared>.album.old{border-color:#d33}
.flag{display:inline-block;font-size:11px;font-weight:600;padding:0 5px;border-radius:8px;color:#fff;margin-right:3px}
.flag.mixed{background:#e08a00}.flag.split{background:#7a3fc4}.flag.disappeared{background:#d33}
.flag.kept{background:#3a8a3a}.flag.new{background:#777}
.heads{display:grid;grid-template-columns:1fr 1fr;gap:8px;font-weight:600;color:#555}
.empty{color:#999;font-style:italic}
"""
# Marks thumbnails that did not load, and counts those that did (read by the tests, shown to nobody).
SCRIPT = """
window.addEventListener('load', function () {
  var loaded = 0;
  document.querySelectorAll('.faces img').forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { loaded++; } else { img.classList.add('missing'); }
  });
  document.body.setAttribute('data-thumbnails-loaded', loaded);
});
"""
FLAGS = ("mixed", "split", "disappeared")
NEW_BADGE = '<span class="flag new">new</span>'


def _href(path: str, page_dir: str) -> str:
    return quote(os.path.relpath(path, page_dir).replace(os.sep, "/"))


class _Writer:
    def __init__(self, report: dict, page_dir: str):
        self.report, self.page_dir = report, page_dir

    def thumbnail(self, face: dict, foreign: bool = False) -> str:
        photo = _href(os.path.join(self.report["photos"], face["photo"]), self.page_dir)
        crop = _href(os.path.join(self.report["aligned"], face["crop"]), self.page_dir)
        name = html.escape(face["photo"])
        marked = ' class="foreign"' if foreign else ""
        return f'<a href="{photo}" title="{name}"><img src="{crop}" alt="{name}"{marked}></a>'

    def album(self, album: dict | None, title: str, side: str, flags: str = "", foreign=frozenset()) -> str:
        if album is None:
            return f'<div class="album {side}"><span class="empty">{title}</span></div>'
        faces = "".join(self.thumbnail(f, f["crop"] in foreign) for f in album["faces"])
        counts = f'{len(album["faces"])} faces · {len(album["photos"])} photos'
        return (f'<div class="album {side}" data-faces="{len(album["faces"])}"><div class="label">{flags}'
                f'<b>{html.escape(title)}</b><span class="counts">{counts}</span></div>'
                f'<div class="faces">{faces}</div></div>')

    def unsorted(self, faces: list[dict], side: str = "") -> str:
        if not faces:
            return ""
        row = "".join(self.thumbnail(f) for f in faces)
        return (f'<div class="album unsorted {side}"><div class="label"><b>unsorted</b><span class="counts">'
                f'{len(faces)} faces in no album</span></div><div class="faces">{row}</div></div>')


def _family_title(family: dict) -> str:
    name = family["family"] or "all photos"
    return (f'<h2>{html.escape(name)} <span class="counts">{family["faces"]} faces in {family["photos"]} '
            f'photos · {len(family["albums"])} albums</span></h2>')


def single_model_family(writer: _Writer, family: dict) -> str:
    rows = [writer.album(album, f"person {number}", "new") for number, album in enumerate(family["albums"], 1)]
    return _family_title(family) + "".join(rows) + writer.unsorted(family["unsorted"])


def compared_family(writer: _Writer, old_family: dict, new_family: dict, outcomes: list[dict]) -> str:
    """Rows of (old album, the new album continuing it), then the new model's other albums."""
    old_by_cluster = {album["cluster"]: (n, album) for n, album in enumerate(old_family["albums"], 1)}
    new_by_cluster = {album["cluster"]: (n, album) for n, album in enumerate(new_family["albums"], 1)}
    rows, continued = [], set()
    for outcome in outcomes:
        number, old = old_by_cluster[outcome["cluster"]]
        flags = [name for name in FLAGS if outcome[name]]
        badges = "".join(f'<span class="flag {f}">{f}</span>' for f in flags) or '<span class="flag kept">kept</span>'
        if outcome["continuation"] is None:
            new_side = writer.album(None, "nothing continues this album", "new")
        else:
            continued.add(outcome["continuation"])
            new_number, new = new_by_cluster[outcome["continuation"]]
            own = {f["crop"] for f in old["faces"]}
            others = {f["crop"] for a in old_family["albums"] if a is not old for f in a["faces"]}
            new_side = writer.album(new, f"person {new_number}", "new", badges, foreign=others - own)
        rows.append(f'<div class="pair {" ".join(flags)}">{writer.album(old, f"person {number}", "old")}'
                    f'{new_side}</div>')
    for cluster, (number, album) in sorted(new_by_cluster.items()):
        if cluster not in continued:
            new_side = writer.album(album, f"person {number}", "new", NEW_BADGE)
            rows.append(f'<div class="pair">{writer.album(None, "no album before", "old")}{new_side}</div>')
    unsorted = (f'<div class="pair">{writer.unsorted(old_family["unsorted"], "old") or "<div></div>"}'
                f'{writer.unsorted(new_family["unsorted"], "new") or "<div></div>"}</div>')
    return (_family_title(new_family) + '<div class="heads"><div>old model</div><div>new model</div></div>'
            + "".join(rows) + unsorted)


def page_html(report: dict, page_dir: str) -> str:
    writer = _Writer(report, page_dir)
    model = html.escape(os.path.basename(os.path.dirname(os.path.dirname(report["model"]))) or report["model"])
    albums = sum(len(f["albums"]) for f in report["families"])
    meta = (f'{report["faces"]} faces · {len(report["families"])} families · {albums} albums · '
            f'model {model} at cosine distance {report["threshold"]:.3f} ({html.escape(report["linkage"])} linkage)')
    if "old" not in report:
        body = "".join(single_model_family(writer, family) for family in report["families"])
    else:
        old = report["old"]
        rates = old["breakage_old_to_new"]
        meta += (f'<br>old model at {old["threshold"]:.3f}: of its {rates["albums"]} albums, '
                 + ", ".join(f'<span class="flag {k}">{k}</span>{rates[k]}' for k in FLAGS)
                 + " (the release gate's breakage measures)")
        body = "".join(compared_family(writer, old_family, new_family, outcome["albums"])
                       for old_family, new_family, outcome in zip(old["families"], report["families"], old["outcomes"]))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Albums</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
            f'<h1>Albums</h1><p class="meta">{meta}</p>{body}</body></html>')


def write_album_page(report: dict, path: str) -> str:
    """Write the page for an ``albums.json`` report to ``path``; returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page_html(report, os.path.dirname(os.path.abspath(path))))
    return path
