"""Box extraction, IoU, pointing game and energy, against cases computed by hand."""

import numpy as np
import pytest

from camcli.geometry import Box, boxes_from_heatmap, energy_inside, iou, peak, pointing_hit, polygon_iou


@pytest.mark.parametrize("a, b, expected", [
    (Box(0, 0, 10, 10), Box(20, 20, 30, 30), 0.0),  # disjoint
    (Box(0, 0, 10, 10), Box(10, 0, 20, 10), 0.0),  # touching edges share no area
    (Box(0, 0, 10, 10), Box(2, 2, 6, 6), 16 / 100),  # nested
    (Box(0, 0, 10, 10), Box(5, 0, 15, 10), 50 / 150),  # half overlap
    (Box(0, 0, 10, 10), Box(0, 0, 10, 10), 1.0),  # identical
    (Box(3, 3, 3, 9), Box(0, 0, 10, 10), 0.0),  # degenerate (zero width)
    (Box(3, 3, 3, 3), Box(3, 3, 3, 3), 0.0),  # two points
])
def test_iou_hand_cases(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)


def test_rotated_iou():
    square = np.array([[0, 0], [2, 0], [2, 2], [0, 2]])
    diamond = np.array([[1, 0], [2, 1], [1, 2], [0, 1]])  # the square rotated 45 degrees, area 2
    assert polygon_iou(square, diamond) == pytest.approx(2 / 4)
    assert polygon_iou(square, square) == pytest.approx(1.0)
    assert polygon_iou(square, square + 5) == 0.0
    assert polygon_iou(square, np.array([[0, 0], [1, 1], [2, 2], [0, 0]])) == 0.0  # degenerate


def test_box_of_a_blob_and_of_the_largest_region():
    heat = np.zeros((50, 80), np.float32)
    heat[10:20, 5:15] = 1.0  # small strong region: 100 px
    heat[30:45, 40:70] = 0.6  # large weaker region: 450 px
    (largest,) = boxes_from_heatmap(heat, threshold=0.5)
    assert (largest.box.x0, largest.box.y0, largest.box.x1, largest.box.y1) == (40, 30, 70, 45)
    assert largest.pixels == 450
    both = boxes_from_heatmap(heat, threshold=0.5, mode="all", min_area=50)
    assert [f.pixels for f in both] == [450, 100]
    assert boxes_from_heatmap(heat, threshold=0.5, mode="all", min_area=200)[0].pixels == 450
    assert len(boxes_from_heatmap(heat, threshold=0.5, mode="all", min_area=200)) == 1
    assert boxes_from_heatmap(heat, threshold=0.7)[0].box == Box(5, 10, 15, 20)  # only the strong one survives


def test_rotated_box_of_a_rotated_bar():
    heat = np.zeros((100, 100), np.uint8)
    import cv2
    bar = cv2.boxPoints(((50, 50), (60, 10), 30)).astype(np.int32)
    cv2.fillPoly(heat, [bar], 255)
    (found,) = boxes_from_heatmap(heat.astype(np.float32) / 255, threshold=0.5)
    assert polygon_iou(np.array(found.corners), bar) > 0.8
    assert found.box.area > 2 * cv2.contourArea(bar.astype(np.float32))  # the axis-aligned box is looser


def test_empty_or_flat_maps_give_no_box():
    assert boxes_from_heatmap(np.zeros((20, 20), np.float32)) == []
    assert boxes_from_heatmap(np.full((20, 20), np.nan, np.float32)) == []
    (whole,) = boxes_from_heatmap(np.full((20, 30), 0.3, np.float32))  # uniform but positive: the whole map
    assert whole.box == Box(0, 0, 30, 20)


def test_pointing_game_and_energy():
    heat = np.zeros((40, 40), np.float32)
    heat[5, 30] = 1.0
    heat[20:30, 20:30] = 0.5
    inside = Box(28, 0, 40, 10)
    outside = Box(0, 0, 10, 10)
    assert pointing_hit(heat, [inside], tolerance=0) and not pointing_hit(heat, [outside], tolerance=0)
    assert pointing_hit(heat, [outside, inside], tolerance=0)  # any of several boxes
    near = Box(31, 6, 40, 10)  # the maximum (30, 5) is one pixel left of and above it
    assert pointing_hit(heat, [near], tolerance=2) and not pointing_hit(heat, [near], tolerance=0)
    assert pointing_hit(heat, [Box(0, 20, 15, 40)]) is False  # 15 px default: (30, 5) is farther
    assert pointing_hit(heat, [Box(0, 0, 16, 12)])  # within 15 px of the published game
    assert not pointing_hit(np.zeros((5, 5)), [Box(0, 0, 5, 5)])  # empty map never hits
    total = 1.0 + 100 * 0.5
    assert energy_inside(heat, [Box(20, 20, 30, 30)]) == pytest.approx(50 / total)
    assert energy_inside(heat, [Box(20, 20, 30, 30), Box(0, 0, 40, 10)]) == pytest.approx(1.0)
    assert energy_inside(heat, [Box(0, 0, 40, 40), Box(0, 0, 40, 40)]) == pytest.approx(1.0)  # union, not sum
    assert energy_inside(np.zeros((4, 4)), [Box(0, 0, 4, 4)]) == 0.0


def test_peak_of_a_border_cell_is_its_centre_not_the_edge():
    import torch

    from camcli.engine.tensors import upsample
    cells = torch.zeros(5, 5)
    cells[0, 2] = 1.0  # strongest cell on the top edge
    heat = upsample(cells, (50, 50)).numpy()  # 10 px cells: the cell's centre is at (24.5, 4.5)
    x, y = peak(heat)
    assert 24 <= x <= 25 and 4 <= y <= 5  # not (x, 0), where the flat strip meets the border
    heat = np.zeros((30, 40), np.float32)
    heat[7, 9] = 1.0
    assert peak(heat) == (9, 7)
