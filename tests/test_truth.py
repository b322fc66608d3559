"""Ground truth read from CSV, Pascal VOC and COCO files the tests write, good and malformed."""

import json

import pytest

from camcli.geometry import Box
from camcli.errors import UsageError
from camcli.evaluation.truth import read_truth


def test_csv_pixels_labels_and_several_boxes(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text("path,x0,y0,x1,y1,label\na/x.jpg,1,2,30,40,cat\na/x.jpg,5,5,9,9,dog\n./b.png,0,0,10,10,\n")
    truth = read_truth(p)
    assert truth["a/x.jpg"] == [Box(1, 2, 30, 40, "cat"), Box(5, 5, 9, 9, "dog")]
    assert truth["b.png"] == [Box(0, 0, 10, 10, None)]


def test_csv_normalised_needs_sizes(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text("path,x0,y0,x1,y1\nx.jpg,0.1,0.2,0.5,1.0\n")
    assert read_truth(p, normalized=True, sizes={"x.jpg": (200, 100)})["x.jpg"] == [Box(20, 20, 100, 100)]
    with pytest.raises(UsageError, match="size of 'x.jpg' unknown"):
        read_truth(p, normalized=True, sizes={})
    p.write_text("path,x0,y0,x1,y1\nx.jpg,0.1,0.2,5,1.0\n")
    with pytest.raises(UsageError, match="line 2.*0..1"):
        read_truth(p, normalized=True, sizes={"x.jpg": (1, 1)})


@pytest.mark.parametrize("text, needle", [
    ("file,x0,y0,x1,y1\n", "line 1: header lacks column"),
    ("path,x0,y0,x1,y1\nx.jpg,1,2,three,4\n", "line 2: coordinates must be numbers"),
    ("path,x0,y0,x1,y1\nok.jpg,1,1,2,2\nx.jpg,1,2\n", "line 3: expected 5 fields"),
    ("path,x0,y0,x1,y1\nx.jpg,10,2,5,4\n", "line 2: x1 < x0"),
    ("", "empty"),
])
def test_csv_malformed_names_file_and_line(tmp_path, text, needle):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(UsageError) as e:
        read_truth(p)
    assert needle in str(e.value) and str(p) in str(e.value)


def test_voc_folder(tmp_path):
    d = tmp_path / "voc"
    d.mkdir()
    (d / "1.xml").write_text("""<annotation><filename>img1.jpg</filename>
      <object><name>cat</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>50</xmax><ymax>60</ymax></bndbox></object>
      <object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>
    </annotation>""")
    truth = read_truth(d)
    assert truth["img1.jpg"] == [Box(10, 20, 50, 60, "cat"), Box(0, 0, 5, 5, "dog")]
    (d / "2.xml").write_text("<annotation><filename>x.jpg</filename><object><name>a</name><bndbox><xmin>1</xmin>"
                             "</bndbox></object></annotation>")
    with pytest.raises(UsageError, match=r"2\.xml: object 1 has no valid <bndbox>"):
        read_truth(d)
    (d / "2.xml").write_text("<annotation><filename>x.jpg\n<object></annotation>")
    with pytest.raises(UsageError, match=r"2\.xml, line 2: malformed XML"):
        read_truth(d)


def test_coco_json(tmp_path):
    p = tmp_path / "coco.json"
    p.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a/1.jpg", "width": 100, "height": 80}, {"id": 2, "file_name": "2.jpg"}],
        "annotations": [{"image_id": 1, "bbox": [10, 20, 30, 40], "category_id": 7},
                        {"image_id": 1, "bbox": [0, 0, 5, 5], "category_id": 8}],
        "categories": [{"id": 7, "name": "cat"}, {"id": 8, "name": "dog"}]}))
    truth = read_truth(p)
    assert truth["a/1.jpg"] == [Box(10, 20, 40, 60, "cat"), Box(0, 0, 5, 5, "dog")]
    assert truth["2.jpg"] == []
    p.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg"}],
                             "annotations": [{"image_id": 9, "bbox": [0, 0, 1, 1]}]}))
    with pytest.raises(UsageError, match="annotation #0"):
        read_truth(p)
    p.write_text('{"images": [\n  oops]}')
    with pytest.raises(UsageError, match="line 2: invalid JSON"):
        read_truth(p)
