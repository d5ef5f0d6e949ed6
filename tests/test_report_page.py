"""The run's report page, report.html, opened from disk in a real browser (headless Chromium): what it shows as
trained is exactly what prepared.jsonl trains, token by token; hovering gives each token's id; the filters change
what is shown; no script error. The page after training is checked in test_end_to_end.py."""

import json
import re
from collections import Counter

import pytest

from browser import open_page, screenshot
from conftest import run_script
from test_conventions import numbered, write_jsonl
from test_data import prepared_rows

IGNORE = -100


@pytest.fixture(scope="module")
def prepared(small_model, tmp_path_factory):
    """A prepared run of two sources: the sample data (long conversations cut at 384 tokens: warnings) and a
    small second file."""
    root = tmp_path_factory.mktemp("report")
    second = str(write_jsonl(root / "second.jsonl", numbered("second", 12)))
    sources = repr(["data/conversations.json", second])
    result = run_script("--prepare_only=True", f"--model_name={small_model}", f"--data_path={sources}",
                        f"--output_dir={root / 'out'}", "--run_name=run", "--max_seq_length=384")
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "out" / "run", second, result, prepared_rows(root / "out")


def test_the_page_is_named_and_self_contained(prepared):
    run_dir, _, result, _ = prepared
    page = run_dir / "report.html"
    assert f"report: {page}" in result.stdout
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing loaded from the network
    assert page.stat().st_size < 5 * 2**20


def test_trained_tokens_on_the_page_are_exactly_the_prepared_labels(prepared):
    run_dir, _, _, rows = prepared
    page = open_page(run_dir / "report.html")
    assert page.body.get("data-ready") == "1" and "data-errors" not in page.body, page.ids.get("errors")
    assert page.console_errors == [] and page.ids["errors"] == ""
    assert len(page.examples) == len(rows) == int(page.body["data-shown"])  # fewer than SHOWN_EXAMPLES here
    for k, tokens in page.examples.items():
        ids, labels = rows[k]["input_ids"], rows[k]["labels"]
        assert [t[0] for t in tokens] == ids, k  # every token shown, in order
        assert [t[0] for t in tokens if t[1]] == [i for i, x in zip(ids, labels) if x != IGNORE], k
        assert [t[1] for t in tokens] == [x != IGNORE for x in labels], k
        assert all(title.startswith(f"id {i} ") for i, _, title in tokens), k  # hovering gives the id
    screenshot(run_dir / "report.html", "report-prepared")


def test_the_old_bug_is_visible_to_the_check(prepared, tmp_path):
    """A page whose labels are shifted by one token (a mask off by one) fails the comparison above."""
    run_dir, _, _, rows = prepared
    text = (run_dir / "report.html").read_text()
    payload = json.loads(re.search(r'<script id="payload" type="application/json">(.*?)</script>', text, re.S)
                         .group(1).replace("<\\/", "</"))
    example = payload["examples"][0]
    example["trained"] = example["trained"][1:] + "0"
    broken = tmp_path / "report.html"
    broken.write_text(text.replace(text[text.index('<script id="payload"'):text.index("</script>") + 9],
                                   '<script id="payload" type="application/json">'
                                   + json.dumps(payload).replace("</", "<\\/") + "</script>", 1))
    tokens = open_page(broken).examples[0]
    labels = rows[0]["labels"]
    assert [t[1] for t in tokens] != [x != IGNORE for x in labels]


def test_filters_change_what_is_shown(prepared):
    run_dir, second, _, rows = prepared
    path = run_dir / "report.html"
    by_source = Counter(r["source"].split(": conversation")[0] for r in rows)
    page = open_page(path, f"source={second}")
    assert len(page.examples) == by_source[second] == 12 and page.console_errors == []
    assert all(rows[k]["source"].startswith(second) for k in page.examples)
    page = open_page(path, "min=300")
    expected = {k for k, r in enumerate(rows) if len(r["input_ids"]) >= 300}
    assert set(page.examples) == expected and 0 < len(expected) < len(rows)
    assert set(open_page(path, "k=7").examples) == {7}
    warned = open_page(path, "warning=1")
    assert 0 < len(warned.examples) < len(rows)  # conversations cut at 384 tokens
    per_conversation = Counter(r["source"] for r in rows)
    for k in warned.examples:  # each from a conversation split in several examples, or cut to the limit
        assert per_conversation[rows[k]["source"]] > 1 or len(rows[k]["input_ids"]) == 384, k
    assert "conversations cut" in warned.dom or "truncated" in warned.dom
    screenshot(path, "report-filtered", "warning=1")


def test_the_page_shows_the_summary_and_the_length_histogram(prepared):
    run_dir, _, result, rows = prepared
    page = open_page(run_dir / "report.html")
    summary = page.ids["summary"]
    for name in ("conversations read", "training examples", "trained tokens", f"source {run_dir.parent.parent}"):
        assert name in summary, name
    assert f"{len(rows)}" in summary
    bars = re.findall(r"<rect [^>]*>\s*<title>(\d+)-(\d+) tokens: (\d+) examples</title>", page.dom)
    assert sum(int(n) for _, _, n in bars) == len(rows)
    assert "MAX_SEQ_LENGTH 384" in page.dom
