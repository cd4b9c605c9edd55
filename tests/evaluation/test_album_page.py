"""The album page as a person sees it (headless Chromium), album outcomes, and the whole way
from a family's photos to albums with a model the framework trained on real faces."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.helpers import browse
from trainer.evaluation import album
from trainer.evaluation.album_page import write_album_page
from trainer.faces import sample_photos

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def loaded_thumbnails(dom):
    found = re.search(r'data-thumbnails-loaded="(\d+)"', dom)
    assert found, "the page's load handler did not run"
    return int(found.group(1))


# -- album outcomes, the per-album view of the gate's breakage --------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=25),
       st.integers(1, 3))
def test_album_outcomes_add_up_to_the_gates_breakage_counts(pairs, min_size):
    before, after = np.array(pairs).T
    outcomes = album.album_outcomes(before, after, min_size)
    counts = album.breakage_counts(before, after, min_size)
    assert counts == {"albums": len(outcomes), **{k: sum(o[k] for o in outcomes)
                                                  for k in ("mixed", "disappeared", "split")}}
    ordered_before, ordered_after = album.first_member_order(before), album.first_member_order(after)
    for outcome in outcomes:
        members = ordered_before == outcome["cluster"]
        assert members.sum() >= min_size
        if outcome["continuation"] is not None:  # it continues where some of its photos went
            assert (ordered_after[members] == outcome["continuation"]).any()


# -- families and thresholds -------------------------------------------------------------------

def test_a_family_is_a_first_level_folder_or_the_whole_folder():
    from trainer.evaluation.photo_albums import family_of

    assert family_of("smiths/2024/beach.jpg") == "smiths"
    assert family_of("beach.jpg") == ""


def test_threshold_auto_is_the_models_own_verification_threshold(tmp_path):
    from trainer.evaluation.photo_albums import resolve_threshold
    from trainer.registry import ConfigError

    model = tmp_path / "run" / "export" / "embedding.keras"
    model.parent.mkdir(parents=True)
    assert resolve_threshold("0.25", str(model)) == 0.25
    with pytest.raises(ConfigError, match="threshold=<cosine distance>"):
        resolve_threshold("auto", str(model))
    # metrics.json holds the squared distance between unit vectors: twice the cosine distance
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"final": {"verification": {"threshold": 1.2}}}))
    assert resolve_threshold("auto", str(model)) == pytest.approx(0.6)


# -- the page, from a hand-made report ---------------------------------------------------------

def make_report(tmp_path, old=False):
    photos, aligned = tmp_path / "photos", tmp_path / "out" / "albums" / "faces"
    families, faces = [], 0
    colours = [(200, 60, 60), (60, 60, 200), (60, 160, 60)]
    for family, sizes in (("smiths", [3, 2]), ("jones", [2, 2, 1])):
        albums, unsorted = [], []
        for cluster, size in enumerate(sizes):
            members = []
            for k in range(size):
                photo, crop = f"{family}/p{cluster}{k}.jpg", f"{family}/p{cluster}{k}_0.jpg"
                for folder, name in ((photos, photo), (aligned, crop)):
                    os.makedirs(os.path.dirname(folder / name), exist_ok=True)
                    Image.new("RGB", (112, 112), colours[cluster]).save(folder / name)
                members.append({"crop": crop, "photo": photo, "box": [0, 0, 50, 50], "score": 1.0})
            faces += size
            if size >= 2:
                albums.append({"cluster": cluster, "faces": members, "photos": sorted(m["photo"] for m in members)})
            else:
                unsorted += members
        families.append({"family": family, "faces": sum(sizes), "photos": sum(sizes), "albums": albums,
                         "unsorted": unsorted})
    report = {"photos": str(photos), "aligned": str(aligned), "model": str(tmp_path / "run/export/embedding.keras"),
              "threshold": 0.3, "linkage": "average", "min_album": 2, "faces": faces, "families": families}
    if old:
        # Old model: the smiths' two people were one album; the jones's first album vanished.
        merged = {"cluster": 0, "faces": families[0]["albums"][0]["faces"] + families[0]["albums"][1]["faces"]}
        merged["photos"] = sorted(f["photo"] for f in merged["faces"])
        report["old"] = {
            "model": "old", "threshold": 0.4,
            "families": [{**families[0], "albums": [merged], "unsorted": []}, families[1]],
            "breakage_old_to_new": {"albums": 3, "mixed": 0, "split": 1, "disappeared": 1,
                                    "mixed_rate": 0, "split_rate": 1 / 3, "disappeared_rate": 1 / 3},
            "outcomes": [{"family": "smiths", "albums": [{"cluster": 0, "continuation": 0, "mixed": False,
                                                          "split": True, "disappeared": False}]},
                         {"family": "jones", "albums": [
                             {"cluster": 0, "continuation": None, "mixed": False, "split": False, "disappeared": True},
                             {"cluster": 1, "continuation": 1, "mixed": False, "split": False, "disappeared": False}]}]}
    return report


def test_page_shows_one_row_per_person_with_every_thumbnail_loaded(tmp_path):
    report = make_report(tmp_path)
    page = write_album_page(report, str(tmp_path / "out" / "albums" / "index.html"))
    html = open(page).read()
    assert "http" not in html.replace("http-equiv", "")  # nothing from the network
    assert html.count('class="album new"') == 4 and html.count('class="album unsorted') == 1
    assert 'href="../../photos/smiths/p00.jpg"' in html and 'src="faces/smiths/p00_0.jpg"' in html
    dom = browse(page, screenshot=str(tmp_path / "page.png"))
    assert loaded_thumbnails(dom) == 10 and 'class="missing"' not in dom
    assert "3 faces · 3 photos" in dom


def test_a_missing_thumbnail_is_marked_on_the_page(tmp_path):
    report = make_report(tmp_path)
    os.remove(tmp_path / "out" / "albums" / "faces" / "smiths" / "p00_0.jpg")
    page = write_album_page(report, str(tmp_path / "out" / "albums" / "index.html"))
    dom = browse(page)
    assert loaded_thumbnails(dom) == 9 and dom.count('class="missing"') == 1


def test_comparison_puts_old_albums_beside_their_continuation_with_the_breakage_flagged(tmp_path):
    report = make_report(tmp_path, old=True)
    page = write_album_page(report, str(tmp_path / "out" / "albums" / "index.html"))
    dom = browse(page)
    assert loaded_thumbnails(dom) == 5 + 10 + 5  # old side, new side (the unsorted face twice)
    assert dom.count('class="pair split"') == 1 and dom.count('class="pair disappeared"') == 1
    assert "nothing continues this album" in dom
    # the smiths' second person, split off the old album, is a new album on the right
    assert dom.count('<span class="flag new">new</span>') == 2  # and the jones's first person


# -- the whole way: photos → aligned training set → a trained model → albums → the page -----------

def person_of_face(face, placements):
    centre = np.mean(np.reshape(face["box"], (2, 2)), 0)
    return min(placements, key=lambda p: np.linalg.norm(sample_photos.face_centre(p) - centre)).person


@pytest.mark.e2e
def test_family_photos_become_one_album_per_person(tmp_path, capsys):
    """Composites of the two people (other photos than the training ones) give, per family,
    one album per person present holding all of that person's faces, and the page shows them."""
    pytest.importorskip("dlib")
    if "astronaut" not in sample_photos.sample_photo_paths():
        pytest.skip("scikit-image's astronaut photo is not installed")
    from trainer.commands.album import main as album_main
    from trainer.commands.data.align import main as align_main

    # 1. An aligned training set: identity folders of composites of each person.
    for seed, person in enumerate(("astronaut", "grace_hopper")):
        sample_photos.write_family(str(tmp_path / "train_photos" / person), 20, seed=100 + seed, people=(person,))
    assert align_main([f"input={tmp_path / 'train_photos'}", f"output={tmp_path / 'aligned'}",
                       "progress=false"]) == 0
    # 2. A model trained by the framework on it.
    env = {**os.environ, "PYTHONPATH": REPO}
    job = subprocess.run([sys.executable, "-m", "trainer", "data=folder", f"data.path={tmp_path / 'aligned'}",
                          "data.image_size=32", "data.holdout=0", "trainer.epochs=4", "trainer.batch_size=32",
                          "logger=none", f"run.dir={tmp_path / 'run'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert job.returncode == 0, job.stderr[-2000:]
    model = str(tmp_path / "run" / "export" / "embedding.keras")
    # 3. Its operating point, from the training faces only (two people leave none to hold out):
    # halfway between the mean distance within a person and the mean distance between the two.
    from trainer.evaluation.photo_albums import midpoint_threshold

    threshold = midpoint_threshold(str(tmp_path / "aligned"), model)
    # 4. Albums of two families' photos.
    placements = {}
    for seed, family in enumerate(("smiths", "joneses")):
        for name, placed in sample_photos.write_family(str(tmp_path / "photos" / family), 8, seed=200 + seed).items():
            placements[f"{family}/{name}"] = placed
    capsys.readouterr()
    assert album_main([f"photos={tmp_path / 'photos'}", f"model={model}", f"threshold={threshold}",
                       f"output={tmp_path / 'out'}", "progress=false"]) == 0
    report = json.loads((tmp_path / "out" / "albums.json").read_text())
    shown = 0
    for family in report["families"]:
        people = {p.person for name, placed in placements.items() if name.startswith(family["family"] + "/")
                  for p in placed}
        assert not family["unsorted"] and len(family["albums"]) == len(people), family["family"]
        found = set()
        for album_entry in family["albums"]:
            who = {person_of_face(f, placements[f["photo"]]) for f in album_entry["faces"]}
            assert len(who) == 1, (family["family"], who)  # nobody else's face in a person's album
            found |= who
            shown += len(album_entry["faces"])
        assert found == people  # and each person's faces all in that one album
    assert shown == report["faces"] == sum(len(p) for p in placements.values())
    # 5. The page, as a browser shows it.
    dom = browse(str(tmp_path / "out" / "albums" / "index.html"), screenshot=str(tmp_path / "albums.png"))
    assert loaded_thumbnails(dom) == shown
    assert dom.count('class="album new"') == sum(len(f["albums"]) for f in report["families"]) == 4
    # 6. The same model as the old one: every album kept, nothing flagged; detection is not redone.
    capsys.readouterr()
    assert album_main([f"photos={tmp_path / 'photos'}", f"model={model}", f"old_model={model}",
                       f"threshold={threshold}", f"old_threshold={threshold}", f"output={tmp_path / 'out'}",
                       "progress=false"]) == 0
    printed = capsys.readouterr().out
    assert "this run: 0 photos aligned, 16 already done" in printed
    assert "old model's 4 albums: 0 mixed, 0 split, 0 disappeared" in printed
    dom = browse(str(tmp_path / "out" / "albums" / "index.html"))
    assert loaded_thumbnails(dom) == 2 * shown
    assert dom.count('<span class="flag kept">kept</span>') == 4 and 'class="pair mixed' not in dom
