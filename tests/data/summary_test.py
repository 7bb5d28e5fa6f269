"""Tests for tfcell.data.summary: the markdown of summarize() and the CLI on real data."""

import pytest

from tfcell.data import records, summary


def _table():
    skips = records.SkipLog("test")
    skips.add("/data/a/.DS_Store", "not an image file")
    skips.add("/data/a/x/junk.txt", "not an image file")
    skips.add("/data/b/neutrophil/dup.png", "duplicate file")
    rows = [
        {
            "path": "/data/a/lymphocyte/1.png",
            "label": 1,
            "class_name": "lymphocyte",
            "domain": "a",
            "subject": "p1",
        },
        {
            "path": "/data/a/neutrophil/2.png",
            "label": 0,
            "class_name": "neutrophil",
            "domain": "a",
            "subject": "p1",
        },
        {
            "path": "/data/a/neutrophil/3.png",
            "label": 0,
            "class_name": "neutrophil",
            "domain": "a",
            "subject": "p2",
        },
        {
            "path": "/data/b/neutrophil/4.png",
            "label": 0,
            "class_name": "neutrophil",
            "domain": "b",
            "subject": "q1",
        },
    ]
    return records.make_records(rows, ["neutrophil", "lymphocyte", "basophil"], skips)


def test_summarize_one_domain():
    frame = _table()
    frame = frame[frame["domain"] == "a"]
    frame.attrs = {"class_names": ["neutrophil", "lymphocyte", "basophil"], "skipped": {}}
    text = summary.summarize(frame, title="a only")
    assert text.startswith("### a only\n")
    assert "3 images, 3 classes, 1 domain (a), 2 subjects." in text
    assert "| neutrophil | 2 |" in text
    assert "| lymphocyte | 1 |" in text
    assert "| basophil | 0 |" in text  # Every class of the label space is listed.
    assert "| **total** | 3 |" in text
    assert "Skipped: none." in text


def test_summarize_several_domains_counts_skips_per_reason_and_domain():
    text = summary.summarize(_table())
    assert "4 images, 3 classes, 2 domains (a, b), 3 subjects." in text  # p1, p2, q1
    assert "| class | a | b | total |" in text
    assert "| neutrophil | 2 | 1 | 3 |" in text
    assert "| lymphocyte | 1 | 0 | 1 |" in text
    assert "| basophil | 0 | 0 | 0 |" in text
    assert "| **total** | 3 | 1 | 4 |" in text
    assert "Subjects per domain: a 2, b 1." in text
    assert "Skipped 3 files:" in text
    assert "| reason | a | b | total |" in text
    assert "| not an image file | 2 | 0 | 2 |" in text
    assert "| duplicate file | 0 | 1 | 1 |" in text


def test_summarize_pixel_size_and_no_subjects():
    frame = _table()
    frame["subject"] = ""
    frame["um_per_px"] = [0.25, 0.25, 0.25, float("nan")]
    text = summary.summarize(frame)
    assert "no subject ids in this layout" in text
    assert "Pixel size: a 0.25 µm/px, b unknown." in text


@pytest.mark.real_data
def test_cli_idc_section_on_real_data(shared_data, capsys):
    assert summary.main(["--shared", str(shared_data), "--only", "idc"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### idc\n")
    assert "7187 images, 2 classes, 1 domain (idc), 199 subjects." in out
    assert "| non_idc | 5301 |" in out
    assert "| idc | 1886 |" in out
    assert "Skipped: none." in out
    assert "### pbc_128" not in out  # --only reads just the named dataset.
