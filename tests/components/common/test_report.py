"""The validation report: entries, counts, the refusal error, and its three saved forms."""

import json

import pytest

from cvat_kfp.components.common.report import (
    ACTIONS,
    FIXED,
    MAX_RENDERED_PER_CODE,
    NOTE,
    REFUSED,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_MARKDOWN,
    SKIPPED,
    Entry,
    Report,
    ReportError,
)


@pytest.fixture
def report() -> Report:
    report = Report("export-annotations")
    report.fixed("box-clipped", "box clipped to the image", "image 3")
    report.skipped("empty-image", "no annotations", "frame_000007.png")
    report.fixed("box-clipped", "box clipped to the image", "image 9")
    report.refused("unknown-label", "label 'dgo' is not in the label map", "annotation 12")
    report.note("source", "read 20 images from a CVAT 1.1 export")
    report.fixed("area-recomputed", "area recomputed from the polygon", 41)
    return report


# --- entries ----------------------------------------------------------------------------------


def test_entries_keep_order_stage_and_fields(report):
    assert [(e.action, e.code) for e in report.entries] == [
        (FIXED, "box-clipped"),
        (SKIPPED, "empty-image"),
        (FIXED, "box-clipped"),
        (REFUSED, "unknown-label"),
        (NOTE, "source"),
        (FIXED, "area-recomputed"),
    ]
    assert {e.stage for e in report.entries} == {"export-annotations"}
    assert report.entries[3] == Entry(
        "export-annotations", REFUSED, "unknown-label", "label 'dgo' is not in the label map",
        "annotation 12",
    )  # fmt: skip


def test_add_returns_the_entry_and_stringifies_the_location():
    report = Report("split")
    entry = report.add(FIXED, "c", "m", 41)
    assert entry == Entry("split", FIXED, "c", "m", "41")
    assert report.entries == [entry]
    assert report.note("c", "m").location == ""


@pytest.mark.parametrize("action", ["fix", "REFUSED", "", "error", None])
def test_invalid_action_is_refused(action):
    report = Report("split")
    with pytest.raises(ValueError, match="report action must be one of"):
        report.add(action, "code", "message")
    assert report.entries == []


def test_actions_are_the_four_known_ones():
    assert set(ACTIONS) == {"fixed", "skipped", "refused", "note"}


def test_of_and_refusals(report):
    assert [e.location for e in report.of(FIXED)] == ["image 3", "image 9", "41"]
    assert [e.code for e in report.refusals] == ["unknown-label"]
    assert report.of(NOTE)[0].message == "read 20 images from a CVAT 1.1 export"


def test_entries_are_immutable(report):
    with pytest.raises(AttributeError):
        report.entries[0].message = "changed"


def test_merge_and_extend_keep_each_entrys_stage():
    first, second = Report("export-annotations"), Report("split")
    first.fixed("a", "one")
    second.skipped("b", "two")
    first.merge(second)
    first.extend([Entry("convert", NOTE, "c", "three")])
    assert [(e.stage, e.code) for e in first.entries] == [
        ("export-annotations", "a"), ("split", "b"), ("convert", "c"),
    ]  # fmt: skip
    assert [e.code for e in second.entries] == ["b"]  # the merged report is untouched


def test_a_new_report_does_not_share_the_entries_list():
    entries = [Entry("s", NOTE, "c", "m")]
    report = Report("s", entries)
    report.note("d", "n")
    assert len(entries) == 1


# --- summary ----------------------------------------------------------------------------------


def test_summary_counts_per_action_and_code(report):
    summary = report.summary()
    assert summary == {
        "refused": {"unknown-label": 1},
        "skipped": {"empty-image": 1},
        "fixed": {"area-recomputed": 1, "box-clipped": 2},
        "note": {"source": 1},
    }
    assert list(summary) == ["refused", "skipped", "fixed", "note"]
    assert list(summary["fixed"]) == ["area-recomputed", "box-clipped"]  # codes sorted


def test_summary_leaves_out_absent_actions():
    report = Report("s")
    assert report.summary() == {}
    report.fixed("z", "m")
    report.fixed("a", "m")
    report.fixed("z", "m")
    assert report.summary() == {"fixed": {"a": 1, "z": 2}}


# --- raise_if_refused -------------------------------------------------------------------------


def test_no_refusal_no_error():
    report = Report("s")
    report.raise_if_refused()
    report.fixed("a", "m")
    report.skipped("b", "m")
    report.note("c", "m")
    report.raise_if_refused()


def test_refusals_raise_listing_each_with_its_location(report):
    report.refused("bad-file", "not an image")  # no location
    with pytest.raises(ReportError) as error:
        report.raise_if_refused("annotation")
    assert str(error.value) == (
        "export-annotations: refused 2 annotation item(s):\n"
        "  - annotation 12: label 'dgo' is not in the label map\n"
        "  - not an image"
    )
    assert isinstance(error.value, ValueError)


def test_refusal_error_default_wording(report):
    with pytest.raises(ReportError, match=r"^export-annotations: refused 1 input item\(s\):"):
        report.raise_if_refused()


def test_refusal_error_truncates_after_twenty():
    report = Report("convert")
    for i in range(1, 26):
        report.refused("corrupt-image", f"cannot decode ({i})", f"img_{i:02d}.jpg")
    with pytest.raises(ReportError) as error:
        report.raise_if_refused()
    message = str(error.value)
    assert message.startswith("convert: refused 25 input item(s):\n")
    assert "  - img_20.jpg: cannot decode (20)\n" in message
    assert "img_21.jpg" not in message
    assert message.endswith("\n  ... and 5 more (see report.json)")
    assert message.count("\n  - ") == 20


def test_refusal_error_at_twenty_has_no_tail():
    report = Report("convert")
    for i in range(20):
        report.refused("x", f"m{i}", f"l{i}")
    with pytest.raises(ReportError) as error:
        report.raise_if_refused()
    assert "more" not in str(error.value)
    assert str(error.value).count("\n  - ") == 20


# --- saving and loading -----------------------------------------------------------------------


def test_save_writes_three_files_and_load_round_trips(report, tmp_path):
    report.refused("ünïcode", "猫 <b>|</b>\nsecond line", "images/猫.jpg")
    path = report.save(tmp_path / "new" / "dir")
    assert path == tmp_path / "new" / "dir" / REPORT_JSON
    for name in (REPORT_JSON, REPORT_MARKDOWN, REPORT_HTML):
        assert (path.parent / name).is_file(), name

    for source in (path, path.parent, str(path)):
        loaded = Report.load(source)
        assert loaded.stage == report.stage
        assert loaded.entries == report.entries
        assert loaded.summary() == report.summary()


def test_report_json_holds_stage_summary_and_entries(report, tmp_path):
    report.note("utf8", "猫")
    data = json.loads((report.save(tmp_path)).read_text(encoding="utf-8"))
    assert data["stage"] == "export-annotations"
    assert data["summary"] == report.summary()
    assert data["entries"][3] == {
        "stage": "export-annotations",
        "action": "refused",
        "code": "unknown-label",
        "message": "label 'dgo' is not in the label map",
        "location": "annotation 12",
    }
    assert len(data["entries"]) == 7
    assert "猫" in (tmp_path / REPORT_JSON).read_text(encoding="utf-8")  # not \\u-escaped


def test_from_dict_tolerates_a_bare_record():
    assert Report.from_dict({}).entries == []
    assert Report.from_dict({}).stage == ""


def test_an_empty_report_saves_and_says_so(tmp_path):
    Report("split").save(tmp_path)
    assert "Nothing was fixed, skipped or refused." in (tmp_path / REPORT_MARKDOWN).read_text()
    assert "Nothing was fixed, skipped or refused." in (tmp_path / REPORT_HTML).read_text()
    assert Report.load(tmp_path).entries == []


# --- Markdown ---------------------------------------------------------------------------------


def test_markdown_has_a_count_table_and_sections_refused_first(report):
    text = report.to_markdown()
    assert text.startswith("# Validation report: export-annotations\n")
    assert "| action | code | count |" in text
    assert "| fixed | box-clipped | 2 |" in text
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == [
        "## refused: unknown-label (1)",
        "## skipped: empty-image (1)",
        "## fixed: area-recomputed (1)",
        "## fixed: box-clipped (2)",
        "## note: source (1)",
    ]
    assert "- image 3: box clipped to the image" in text
    assert "- read 20 images from a CVAT 1.1 export" in text


def test_markdown_escapes_pipes_and_newlines_in_messages():
    report = Report("s")
    report.fixed("c", "a|b\nc\r\nd\re", "loc|x\ny")
    lines = report.to_markdown().splitlines()
    items = [line for line in lines if line.startswith("- ")]
    assert items == ["- loc\\|x y: a\\|b c  d e"]
    assert not any(line in ("c", "d", "e", "y: a") for line in lines)


def test_markdown_truncates_each_code_after_the_limit():
    report = Report("s")
    for i in range(MAX_RENDERED_PER_CODE + 7):
        report.skipped("empty", f"message {i}")
    text = report.to_markdown()
    assert f"- message {MAX_RENDERED_PER_CODE - 1}\n" in text
    assert f"message {MAX_RENDERED_PER_CODE}\n" not in text
    assert "- ... and 7 more in report.json" in text
    assert f"| skipped | empty | {MAX_RENDERED_PER_CODE + 7} |" in text


# --- HTML -------------------------------------------------------------------------------------


def test_html_escapes_everything_the_user_controls():
    script = "<script>alert('x')</script>"
    report = Report(f"stage {script}")
    report.refused(f"code{script}", f"message {script} & more", f"file {script}.jpg")
    text = report.to_html()
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert "message &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in text
    assert text.startswith("<!DOCTYPE html>")
    assert text.rstrip().endswith("</body></html>")


def test_html_lists_entries_with_counts(report):
    text = report.to_html()
    assert "<meta charset='utf-8'>" in text
    assert "<tr class='fixed'><td>fixed</td><td>box-clipped</td><td>2</td></tr>" in text
    assert "<li>annotation 12: label &#x27;dgo&#x27; is not in the label map</li>" in text
    assert text.index("refused: unknown-label") < text.index("fixed: box-clipped")


def test_html_truncates_each_code_after_the_limit():
    report = Report("s")
    for i in range(MAX_RENDERED_PER_CODE + 3):
        report.fixed("f", f"m{i}")
    text = report.to_html()
    assert text.count("<li>") == MAX_RENDERED_PER_CODE + 1
    assert "<li>... and 3 more in report.json</li>" in text
