"""What a map of a scan becomes (issue 38, item 4): a NIfTI map that lies over the scan file voxel
for voxel, and a picture of three planes through the peak in the radiological convention."""

from __future__ import annotations

import numpy as np
import pytest

nib = pytest.importorskip("nibabel", reason="the medical extra (nibabel) is not installed")

SHAPE = (20, 24, 16)


def stored_scan(tmp_path, blob_at):
    """A scan stored L, P, S (DICOM's axes, as many NIfTI files from DICOM are) with a bright block at ``blob_at``."""
    from camcli.engine.scans import read_scan

    volume = np.random.default_rng(0).uniform(0, 0.2, SHAPE).astype(np.float32)
    x, y, z = blob_at
    volume[x - 1:x + 2, y - 1:y + 2, z - 1:z + 2] = 1.0
    volume[x, y, z] = 1.5  # its centre the brightest voxel
    affine = np.diag([-1.5, -1.0, 2.5, 1.0])
    affine[:3, 3] = (30.0, 20.0, -40.0)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    return read_scan(path)[0], affine


def test_the_nifti_map_lies_over_the_scan_file_voxel_for_voxel(tmp_path):
    from camcli.output.volume_nifti import FullMap

    scan, affine = stored_scan(tmp_path, (4, 17, 11))
    heat = scan.voxels / scan.voxels.max()  # a map that is the scan's own brightness: it peaks on the block
    full = FullMap(heat, scan.grid)  # at the scan's own size: upsampled by one
    (tmp_path / "map.nii.gz").write_bytes(b"".join(full.nifti()))
    written = nib.load(str(tmp_path / "map.nii.gz"))
    assert written.shape == SHAPE and np.allclose(written.affine, affine)
    assert int(written.header["sform_code"]) == 1 and int(written.header["qform_code"]) == 1
    peak_file = np.unravel_index(int(np.asarray(written.dataobj).argmax()), SHAPE)
    assert tuple(int(v) for v in peak_file) == (4, 17, 11)  # the file's own index, though camcli works in RAS
    assert full.peak == (4, 17, 11)
    assert scan.grid.stored_shape == SHAPE
    peak_ras = np.unravel_index(int(heat.argmax()), heat.shape)
    assert scan.grid.stored_index(peak_ras) == (4, 17, 11) and scan.grid.ras_index((4, 17, 11)) == peak_ras
    assert np.allclose(scan.millimetres(peak_ras), affine[:3] @ (4, 17, 11, 1))


@pytest.mark.parametrize("codes", ["RAS", "LPS", "SAR", "PIL"])
def test_a_map_upsampled_a_slab_at_a_time_equals_trilinear_on_the_whole_scan(codes, monkeypatch):
    """A CT's map is never held whole: slabs of a few slices, on the file's grid, must be what
    PyTorch's trilinear upsampling of the whole map gives, laid out as the file stores the scan."""
    import torch
    import torch.nn.functional as F
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

    from camcli.engine.scans import Grid
    from camcli.output import volume_nifti

    ras_shape = (37, 29, 23)
    affine = np.diag([0.7, 0.9, 2.0, 1.0])
    to_file = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(codes)))
    grid = Grid(ras_shape, affine, codes, to_file, affine @ inv_ornt_aff(to_file, ras_shape))
    small = np.random.default_rng(1).random((5, 4, 3)).astype(np.float32)
    monkeypatch.setattr(volume_nifti, "SLAB_BYTES", 4 * 37 * 37 * 3)  # a few slices a slab
    full = volume_nifti.FullMap(small, grid)
    slabs = list(full.slabs())
    assert len(slabs) > 3
    whole = np.concatenate(slabs, axis=2)
    reference = F.interpolate(torch.from_numpy(small)[None, None], size=ras_shape, mode="trilinear",
                              align_corners=False)[0, 0].clamp(0, 1).numpy()
    on_file = apply_orientation(reference, to_file)
    assert whole.shape == on_file.shape and np.abs(whole - on_file).max() < 1e-5
    assert whole[full.peak] == whole.max()


def test_the_planes_picture_shows_the_patients_right_on_the_left_and_anterior_up(tmp_path):
    from camcli.output.volume_figures import planes_figure

    scan, _ = stored_scan(tmp_path, (4, 17, 11))
    heat = scan.voxels / scan.voxels.max()
    peak = np.unravel_index(int(heat.argmax()), heat.shape)
    # the block's position in RAS: towards the patient's right and front (stored index 4 of an
    # L-growing axis is near the right; 17 of a P-growing axis of 24 is towards the back)
    x, y, _ = peak
    assert x > SHAPE[0] / 2 and y < SHAPE[1] / 2
    figure = planes_figure(scan.voxels / scan.voxels.max(), heat, peak, scan.spacing)
    assert figure.ndim == 3 and figure.shape[2] == 3 and figure.dtype == np.uint8
    # the axial plane is the first tile, under a 16-pixel label: find its reddest pixel (jet's top)
    width = int(round(SHAPE[0] * scan.spacing[0] * 256 / max(n * s for n, s in zip(SHAPE, scan.spacing))))
    height = int(round(SHAPE[1] * scan.spacing[1] * 256 / max(n * s for n, s in zip(SHAPE, scan.spacing))))
    tile = figure[16:16 + height, :width].astype(int)
    red = (tile[:, :, 0] > 150) & (tile[:, :, 2] < 120) & (tile[:, :, 1] < 200)  # jet's hot end, not the yellow letters
    assert red.sum() > 20
    r, c = (float(v.mean()) for v in np.nonzero(red))
    assert c < width / 2, "the patient's right is drawn on the left"
    assert r > height / 2, "a block towards the back is drawn low: anterior is up"


def test_the_resampling_is_recorded_along_the_files_own_axes():
    """A file stored S, A, R: the row's factors follow its axes, as its shape and spacing do."""
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, ornt_transform

    from camcli.engine.discovery import ImageItem
    from camcli.engine.scans import Grid
    from camcli.engine.volume_stream import VolumeResult
    from camcli.output.volume_writer import base_row

    ras_shape = (40, 30, 20)
    to_file = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(("S", "A", "R")))
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    grid = Grid(ras_shape, affine, "SAR", to_file, affine @ inv_ornt_aff(to_file, ras_shape))
    item = ImageItem(0, "scan.nii.gz", "scan.nii.gz", kind="scan")
    row = base_row(VolumeResult(item, "ok", grid=grid, factors=(0.8, 1.0, 1.6), topk=[(0, "a", 0.9)]))
    assert row.shape == "20x30x40" and row.spacing == "3x2x1"
    assert row.resampled == "1.6x1x0.8"
