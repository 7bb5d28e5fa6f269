"""Tests for tfcell.data.nuclei: layouts, XML rasterisation, instances, sparse annotations."""

import numpy as np
import pytest
from PIL import Image

from tfcell.data import nuclei

_XML = """<?xml version="1.0"?>
<Annotations><Annotation><Regions>
<Region Id="1"><Vertices><Vertex X="1" Y="1"/><Vertex X="5" Y="1"/><Vertex X="5" Y="5"/><Vertex X="1" Y="5"/></Vertices></Region>
<Region Id="2"><Vertices><Vertex X="10" Y="10"/><Vertex X="14" Y="10"/><Vertex X="14" Y="13"/></Vertices></Region>
<Region Id="3"><Vertices><Vertex X="0" Y="0"/></Vertices></Region>
</Regions></Annotation></Annotations>
"""


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_instances_from_binary_mask():
    mask = np.zeros((10, 12), np.uint8)
    mask[1:3, 1:4] = 255
    mask[6:9, 8:10] = 255
    result = nuclei.instances_from_mask(mask)
    assert list(result["ids"]) == [1, 2]
    np.testing.assert_array_equal(result["boxes"], [[1, 1, 3, 4], [6, 8, 9, 10]])
    np.testing.assert_allclose(result["centroids"], [[1.5, 2.0], [7.0, 8.5]])
    np.testing.assert_array_equal(result["areas"], [6, 6])
    # Touching diagonally: separate with 4-connectivity, one object with 8.
    diag = np.zeros((4, 4), bool)
    diag[0, 0] = diag[1, 1] = True
    assert len(nuclei.instances_from_mask(diag)["ids"]) == 2
    assert len(nuclei.instances_from_mask(diag, connectivity=2)["ids"]) == 1
    empty = nuclei.instances_from_mask(np.zeros((3, 3)))
    assert empty["centroids"].shape == (0, 2) and empty["boxes"].shape == (0, 4)


def test_instances_from_instance_map_keeps_touching_objects():
    instance = np.zeros((4, 6), np.int32)
    instance[:, :3] = 7
    instance[:, 3:] = 9  # touches object 7: must stay separate
    result = nuclei.instances_from_mask(instance)
    assert list(result["ids"]) == [1, 2]
    assert set(np.unique(result["instance_map"])) == {1, 2}
    with pytest.raises(ValueError, match="2-D"):
        nuclei.instances_from_mask(np.zeros((2, 2, 2)))


def test_sparsify_annotations():
    instance = np.zeros((20, 20), np.int32)
    for i in range(10):
        instance[2 * i, i : i + 2] = i + 1
    for fraction, expected in ((0.3, 3), (0.6, 6), (0.9, 9), (1.0, 10)):
        kept, annotated = nuclei.sparsify_annotations(instance, fraction, seed=1)
        kept_ids = set(np.unique(kept)) - {0}
        assert len(kept_ids) == expected
        dropped = (instance > 0) & (kept == 0)
        # Dropped objects are unannotated, never background; background stays annotated.
        np.testing.assert_array_equal(annotated, ~dropped)
        assert annotated[instance == 0].all()
        assert np.all(kept[kept > 0] == instance[kept > 0])
    again, _ = nuclei.sparsify_annotations(instance, 0.3, seed=1)
    np.testing.assert_array_equal(again, nuclei.sparsify_annotations(instance, 0.3, seed=1)[0])
    with pytest.raises(ValueError, match="fraction"):
        nuclei.sparsify_annotations(instance, 0.0)


def test_rasterize_xml(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text(_XML)
    instance = nuclei.rasterize_xml(xml, (16, 16))
    assert set(np.unique(instance)) == {0, 1, 2}
    assert instance[3, 3] == 1 and instance[11, 13] == 2 and instance[0, 0] == 0
    (tmp_path / "bad.xml").write_text("<Annotations>")
    with pytest.raises(ValueError, match="bad.xml"):
        nuclei.rasterize_xml(tmp_path / "bad.xml", (4, 4))


def test_read_monuseg_masks_and_xml(tmp_path):
    image = np.zeros((16, 16, 3), np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[2:5, 2:5] = 255
    for stem in ("TCGA-18-5592-01Z-00-DX1", "TCGA-21-5784-01Z-00-DX1"):
        _save(tmp_path / "m" / "images" / f"{stem}.png", image)
        _save(tmp_path / "m" / "masks" / f"{stem}.png", mask)
        _save(tmp_path / "x" / "images" / f"{stem}.tif", image)
        (tmp_path / "x" / "annotations").mkdir(parents=True, exist_ok=True)
        (tmp_path / "x" / "annotations" / f"{stem}.xml").write_text(_XML)
    _save(tmp_path / "m" / "images" / "TCGA-99-0000-01Z-00-DX1.png", image)
    frame = nuclei.read_monuseg(tmp_path / "m")
    assert sorted(frame["subject"]) == ["TCGA-18-5592", "TCGA-21-5784"]
    assert frame.attrs["skipped"]["image without mask"][0].endswith("TCGA-99-0000-01Z-00-DX1.png")
    assert len(nuclei.instances_from_mask(nuclei.load_mask(frame["mask_path"][0]))["ids"]) == 1
    xml_frame = nuclei.read_monuseg(tmp_path / "x")
    assert len(xml_frame) == 2 and "annotation_path" in xml_frame
    with pytest.raises(ValueError, match="has no mask"):
        nuclei.read_image_mask_folders(
            tmp_path / "m" / "images", tmp_path / "m" / "masks", missing="error"
        )


def test_read_tnbc(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((8, 8), np.uint8)
    for slide in ("01", "02"):
        for k in (1, 2):
            _save(tmp_path / f"Slide_{slide}" / f"{slide}_{k}.png", image)
            _save(tmp_path / f"GT_{slide}" / f"{slide}_{k}.png", mask)
    _save(tmp_path / "Slide_03" / "03_1.png", image)
    frame = nuclei.read_tnbc(tmp_path)
    assert len(frame) == 4 and sorted(frame["subject"].unique()) == ["01", "02"]
    assert frame.attrs["skipped"]["image without mask"][0].endswith("03_1.png")


@pytest.mark.real_data
def test_real_monuseg_masks_to_instances(shared_data):
    frame = nuclei.read_monuseg(shared_data / "nuclei" / "monuseg_train")
    assert len(frame) == 30 and frame.attrs["skipped"] == {}
    mask = nuclei.load_mask(frame["mask_path"][0])
    assert mask.shape == (1000, 1000) and set(np.unique(mask)) <= {0, 1, 255}
    result = nuclei.instances_from_mask(mask)
    count = len(result["ids"])
    assert count > 50  # a 1000x1000 MoNuSeg tile holds hundreds of nuclei
    assert result["boxes"].shape == (count, 4) and result["centroids"].shape == (count, 2)
    kept, annotated = nuclei.sparsify_annotations(result["instance_map"], 0.3, seed=0)
    assert len(np.unique(kept)) - 1 == round(0.3 * count)
    assert not annotated[(result["instance_map"] > 0) & (kept == 0)].any()
