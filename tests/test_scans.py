"""Reading 3D scans (issue 38, items 1 and 8): nibabel's and pydicom's own example files, no network.

What a user sees: the voxel that lies at a given millimetre position in the file is the voxel
camcli reports at that position; a series is stacked by slice position, not by file name; a
series that is no volume is refused with the reason; NumPy files are read as data only.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from camcli.errors import UsageError

nib = pytest.importorskip("nibabel", reason="the medical extra (nibabel) is not installed")
pydicom = pytest.importorskip("pydicom", reason="the medical extra (pydicom) is not installed")

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"
DICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"
SERIES = DICOM_DATA / "dicomdirtests"


def same_voxels_at_same_millimetres(scan, image) -> None:
    """Every 97th voxel of the file, found by its scanner position in camcli's scan, holds the same value."""
    data = np.asarray(image.get_fdata(dtype=np.float32))
    to_scan = np.linalg.inv(scan.affine)
    idx = np.stack(np.unravel_index(np.arange(0, data.size, 97), data.shape), 1)
    mm = (image.affine @ np.c_[idx, np.ones(len(idx))].T)
    ours = np.rint((to_scan @ mm)[:3].T).astype(int)
    assert np.allclose((to_scan @ mm)[:3].T, ours, atol=1e-4)  # a voxel centre lands on a voxel centre
    assert np.array_equal(scan.voxels[tuple(ours.T)], data[tuple(idx.T)])


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz"])
def test_nifti_voxels_keep_their_millimetres_and_go_back_to_the_files_grid(name):
    from camcli.engine.scans import read_scan

    path = NIB_DATA / name
    image = nib.load(str(path))
    (scan,) = read_scan(path)
    assert "".join(nib.aff2axcodes(scan.affine)) == "RAS"
    same_voxels_at_same_millimetres(scan, image)
    back = scan.on_stored_grid(scan.voxels)
    assert np.array_equal(back, image.get_fdata(dtype=np.float32)) and np.allclose(scan.stored_affine, image.affine)


def test_a_flipped_scan_is_brought_to_ras_and_its_peak_keeps_its_position(tmp_path):
    from camcli.engine.scans import read_scan

    volume = np.zeros((20, 16, 12), np.float32)
    volume[3, 11, 7] = 5.0
    affine = np.diag([-2.0, -1.5, 3.0, 1.0])  # stored L, P, S (DICOM's axes)
    affine[:3, 3] = (40.0, 30.0, -10.0)
    nib.save(nib.Nifti1Image(volume, affine), str(tmp_path / "lps.nii.gz"))
    (scan,) = read_scan(tmp_path / "lps.nii.gz")
    assert scan.stored == "LPS" and scan.shape == (20, 16, 12)
    assert np.allclose(np.diag(scan.affine)[:3], (2.0, 1.5, 3.0))  # every axis now grows towards R, A, S
    peak = np.unravel_index(int(scan.voxels.argmax()), scan.shape)
    assert np.allclose(scan.millimetres(peak), affine[:3] @ (3, 11, 7, 1))
    assert scan.spacing == pytest.approx((2.0, 1.5, 3.0))


def test_a_dicom_series_is_stacked_by_position_not_by_file_name(tmp_path):
    from camcli.engine.discovery import discover
    from camcli.engine.scans import read_scan

    files = sorted((SERIES / "98892001" / "CT5N").iterdir())
    # names whose sorted order is the reverse of the slices' order along z
    headers = {f: pydicom.dcmread(str(f)) for f in files}
    by_z = sorted(files, key=lambda f: float(headers[f].ImagePositionPatient[2]))
    for i, f in enumerate(by_z):
        shutil.copy(f, tmp_path / f"slice_{len(by_z) - i:02d}")  # no suffix: found by the DICOM magic
    (found,) = discover([tmp_path])  # the folder named is itself the series: one scan, named after it
    assert found.kind == "scan" and found.path == str(tmp_path) and found.rel == tmp_path.name
    (scan,) = read_scan(tmp_path)
    zs = [float(headers[f].ImagePositionPatient[2]) for f in by_z]
    assert scan.shape[2] == len(files) and scan.format == "dicom" and scan.modality == "CT"
    assert scan.spacing[2] == pytest.approx(2.5)
    for k, f in enumerate(by_z):  # slice k is the k-th from the feet up, in Hounsfield units
        ds = headers[f]
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert scan.millimetres((0, 0, k))[2] == pytest.approx(zs[k], abs=1e-3)
        # RAS: x grows towards the patient's right, DICOM's columns towards the left; y likewise
        assert np.array_equal(scan.voxels[:, :, k], hu.T[::-1, ::-1])


@pytest.mark.parametrize("series, reason", [("98892003/MR700", "different orientations"),
                                            ("77654033/CT2", "unevenly spaced")])
def test_a_series_that_is_no_volume_is_refused_with_the_reason(tmp_path, series, reason):
    from camcli.engine.scans import read_scan

    for f in (SERIES / series).iterdir():
        shutil.copy(f, tmp_path / f.name)
    with pytest.raises(UsageError, match=reason):
        read_scan(tmp_path)


def test_a_multiframe_dose_grid_is_one_volume_spaced_by_its_frame_offsets():
    from camcli.engine.scans import read_scan

    ds = pydicom.dcmread(str(DICOM_DATA / "rtdose.dcm"))
    (scan,) = read_scan(DICOM_DATA / "rtdose.dcm")
    offsets = [float(o) for o in ds.GridFrameOffsetVector]
    assert scan.shape == (int(ds.Columns), int(ds.Rows), int(ds.NumberOfFrames))
    assert scan.spacing[2] == pytest.approx(abs(offsets[1] - offsets[0]))
    frames = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1)
    k_first = 0 if offsets[-1] > offsets[0] else len(offsets) - 1
    assert np.array_equal(scan.voxels[:, :, 0], frames[k_first].T[::-1, ::-1])


def test_numpy_volumes_are_data_only(tmp_path):
    from camcli.engine.scans import read_scan

    volume = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    np.save(tmp_path / "plain.npy", volume)
    (scan,) = read_scan(tmp_path / "plain.npy")
    assert np.array_equal(scan.voxels, volume) and np.array_equal(scan.affine, np.eye(4))
    affine = np.diag([1.0, 1.0, -2.0, 1.0])
    np.savez(tmp_path / "with_affine.npz", volume=volume, affine=affine)
    (scan,) = read_scan(tmp_path / "with_affine.npz")
    assert np.allclose(np.diag(scan.affine)[:3], (1, 1, 2)) and np.array_equal(scan.voxels, volume[:, :, ::-1])
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UsageError, match="as data"):
        read_scan(tmp_path / "objects.npy")
    np.save(tmp_path / "flat.npy", np.zeros((4, 5)))
    with pytest.raises(UsageError, match=r"\(X, Y, Z\)"):
        read_scan(tmp_path / "flat.npy")


def test_four_dimensional_nifti_is_refused_not_cut():
    from camcli.engine.scans import read_scan

    with pytest.raises(UsageError, match="4-D NIfTI"):
        read_scan(NIB_DATA / "example4d.nii.gz")


def test_without_the_medical_extra_the_error_says_what_to_install(monkeypatch):
    from camcli.engine.scans import read_scan

    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(UsageError, match=r"camcli\[medical\]"):
        read_scan(NIB_DATA / "anatomical.nii")


def test_ct_windows_and_fitting_to_the_input_size():
    from camcli.engine.intensity import fitted, scaled, window_of, windowed

    assert window_of("brain") == (40.0, 80.0) and window_of("Soft tissue") == (50.0, 400.0)
    assert window_of("-600,1500") == (-600.0, 1500.0)
    with pytest.raises(UsageError, match="level,width"):
        window_of("bright")
    hu = np.array([-1000.0, 0.0, 40.0, 80.0, 3000.0])
    assert np.allclose(windowed(hu, 40, 80), [0, 0, 0.5, 1, 1])
    assert np.allclose(scaled(hu, "minmax"), (hu + 1000) / 4000)
    spikes = np.r_[np.linspace(0, 1, 999), 1e6]  # one hot voxel does not darken the rest
    assert scaled(spikes, "percentiles")[500] > 0.45
    tensor, factors = fitted(np.ones((10, 20, 30), np.float32), (20, 20, 15))
    assert tuple(tensor.shape) == (1, 20, 20, 15) and factors == (2.0, 1.0, 0.5)


@pytest.mark.parametrize("values", ["normal", "hounsfield", "constant_tail"])
def test_percentiles_of_a_large_scan_are_numpys_without_sorting_a_copy(values, monkeypatch):
    """A CT's percentiles are counted, not sorted (a sorted copy costs another 420 MB): the result
    must still be numpy's, ties, integers and a one-valued bulk included, in any axis order."""
    from camcli.engine import intensity

    monkeypatch.setattr(intensity, "LARGE", 1000)  # counting from a thousand voxels on
    monkeypatch.setattr(intensity, "CHUNK", 4096)
    rng = np.random.default_rng(3)
    volume = {"normal": lambda: rng.normal(size=(40, 30, 20)),
              "hounsfield": lambda: rng.integers(-1000, 2000, size=(40, 30, 20)),
              "constant_tail": lambda: np.r_[np.zeros(23_990), np.linspace(1, 2, 10)].reshape(40, 30, 20)}[values]()
    volume = np.asfortranarray(volume.astype(np.float32))  # as nibabel returns volumes
    for q in [(0.5, 99.5), (0, 100), (50,)]:
        assert np.allclose(intensity.percentiles(volume, q), np.percentile(volume, q), rtol=1e-6, atol=1e-6)
    assert np.allclose(intensity.scaled(volume.copy(), "percentiles", in_place=True),
                       np.clip((volume - np.percentile(volume, 0.5)) / np.ptp(np.percentile(volume, (0.5, 99.5))),
                               0, 1) if np.ptp(np.percentile(volume, (0.5, 99.5))) > 0 else 0, atol=1e-6)
