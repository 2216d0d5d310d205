"""The pure renderers behind the panes: bar chart markers, half-block heatmaps, path completion."""

from __future__ import annotations

from ui_synthetic import L1, nc_result

from workbench.ui import render
from workbench.ui.screens.dialogs import complete_path, path_matches


def test_norm_bars_mark_median_threshold_and_suspect():
    per = nc_result()["per_class"]
    text = render.norm_bars(per, suspected=3, width=40).plain
    lines = text.splitlines()
    assert len([ln for ln in lines if "class" in ln]) == len(L1)
    suspect = next(ln for ln in lines if "class   3" in ln)
    assert suspect.startswith("▶") and "8.40" in suspect
    assert all("│" in ln for ln in lines if "class" in ln)  # the median line crosses every bar row
    st = render.norm_stats(per)
    assert f"median {st['median']:.2f}" in text and f"= {st['cut']:.2f}" in text
    # the suspected class is the only bar that stops before the threshold marker
    for ln in lines:
        if "class" in ln:
            bar = ln.split(" ", 4)[-1]
            cut = bar.index("┊")
            assert ("█" in bar[cut:]) == ("class   3" not in ln)


def test_heatmap_half_blocks_keep_the_shape_in_plain_text():
    mask = [[0.0] * 8 for _ in range(8)]
    for y in (5, 6):
        for x in (6, 7):
            mask[y][x] = 1.0
    text = render.heatmap(mask, normalise=False, xscale=1)
    rows = text.plain.splitlines()
    assert len(rows) == 4 and all(len(r) == 8 for r in rows)  # two pixel rows per character row
    assert rows[2] == " " * 6 + "▄▄" and rows[3] == " " * 6 + "▀▀"
    assert all(span.style.bgcolor is not None for span in text.spans)  # both pixels are coloured


def test_rgb_pattern_and_stamped_trigger():
    res = nc_result()
    grid, rgb = render.gray_pattern([res["pattern"]] * 3)
    assert rgb and len(grid) == 3
    st = render.stamped_trigger(res["mask"], res["pattern"])
    assert st[12][12] == 1.0 and st[0][0] == 0.0
    assert render.heatmap(grid, rgb=True).plain.count("\n") == 8


def test_path_completion(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "suspect.safetensors").write_bytes(b"x")
    (tmp_path / "models" / "suspect-2.pt").write_bytes(b"x")
    assert complete_path(str(tmp_path / "mod")) == str(tmp_path / "models") + "/"
    assert complete_path(str(tmp_path / "models" / "s")) == str(tmp_path / "models" / "suspect")
    assert complete_path(str(tmp_path / "models" / "suspect.")) == str(tmp_path / "models" / "suspect.safetensors")
    assert [p.name for p in path_matches(str(tmp_path / "models") + "/")] == ["suspect-2.pt", "suspect.safetensors"]
    assert complete_path(str(tmp_path / "nothing-here")) is None
