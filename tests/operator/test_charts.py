"""The server-side SVG charts: scaled bars, compact axis labels, escaped text."""

from __future__ import annotations

from apps.operator.charts import Series, compact, meter, stacked_bars


def test_axis_labels_are_compact():
    assert [compact(v) for v in (0, 2.5, 40, 1_500, 2_000_000, 5_000_000_000)] == [
        "0",
        "2.5",
        "40",
        "1.5k",
        "2M",
        "5G",
    ]


def test_bars_stack_and_scale_to_a_round_maximum():
    svg = str(
        stacked_bars(
            title="t",
            labels=["a", "b"],
            series=[Series("ok", "s-ok", [3, 0]), Series("bad", "s-fail", [2, 0])],
            width=148,
            height=132,
        )
    )
    # Plot: 100 px tall, maximum 5 (3 + 2), two slots of 46 px, bars of 36.8 px centred in them.
    assert '<rect class="s-ok" x="52.6" y="50.0" width="36.8" height="60.0">' in svg
    assert '<rect class="s-fail" x="52.6" y="10.0" width="36.8" height="40.0">' in svg
    assert svg.count("<rect") == 2  # zero values draw nothing
    assert '<text class="axis" x="42" y="14.0" text-anchor="end">5</text>' in svg
    assert '<text class="axis" x="42" y="64.0" text-anchor="end">2.5</text>' in svg


def test_labels_and_titles_are_escaped():
    svg = str(stacked_bars(title="<x>", labels=["<script>"], series=[Series("<s>", "c", [1])]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "<x>" not in svg and "<s>" not in svg


def test_a_meter_fills_by_share_and_colours_by_level():
    assert 'style="width: 50%"' in str(meter(value=2, maximum=4))
    assert "meter-fill high" in str(meter(value=9, maximum=10))
    assert 'style="width: 0%"' in str(meter(value=0, maximum=0))
    assert str(meter(value=3, maximum=2)).endswith(" 3/2")
