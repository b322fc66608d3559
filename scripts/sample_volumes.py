"""Write ``sample_volumes/``: held-out scans of the demo volume classifier as NIfTI files, stored in
several orientations, and one as a DICOM CT series (not run by CI; the files are committed).

    python scripts/sample_volumes.py

The scans come from scripts/heldout_volumes.py (seed 21). NIfTI files are stored RAS, LPS (as
converters from DICOM write them) or with their axes permuted, each with its voxel spacing in the
affine, so the demo shows camcli bringing them to one orientation and writing each map back on
its file's own grid. The DICOM series stores one scan as CT slices (Hounsfield units through
RescaleIntercept), in shuffled file order. :func:`write_dicom_series` is also what the tests use.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_dicom_series(folder: Path, hu: np.ndarray, spacing, origin=(0.0, 0.0, 0.0), order=None,
                       modality: str = "CT") -> None:
    """``hu`` (X, Y, Z) in Hounsfield units as a DICOM series in ``folder``: one slice per z, the
    patient's axes as DICOM's (LPS): column index along +x (left), row index along +y (posterior),
    slices along +z; ``origin`` is the first voxel's centre in LPS mm; ``order`` permutes the
    files' names (they are numbered in that order, not in slice order)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    nx, ny, nz = hu.shape
    order = list(range(nz)) if order is None else list(order)
    for name_number, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.PatientName, ds.PatientID = modality, "camcli^demo", "demo"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.Rows, ds.Columns = ny, nx
        ds.PixelSpacing = [f"{spacing[1]:.4f}", f"{spacing[0]:.4f}"]  # row spacing (y), column spacing (x)
        ds.SliceThickness = f"{spacing[2]:.4f}"
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.ImagePositionPatient = [f"{origin[0]:.4f}", f"{origin[1]:.4f}", f"{origin[2] + k * spacing[2]:.4f}"]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
        stored = np.clip(np.rint(hu[:, :, k].T + 1024), -32768, 32767).astype(np.int16)  # rows are y, columns x
        ds.PixelData = stored.tobytes()
        ds.save_as(str(folder / f"IM{name_number:04d}"), enforce_file_format=True)


def main() -> None:
    import nibabel as nib

    sys.path.insert(0, str(ROOT / "scripts"))
    from heldout_volumes import CLASSES, heldout_batch

    out = ROOT / "sample_volumes"
    out.mkdir(exist_ok=True)
    volumes, labels, _masks, spacings = heldout_batch(21, 7)
    stores = ["RAS", "LPS", "permuted", "RAS", "LPS", "permuted"]
    for i, how in enumerate(stores):
        v, s = volumes[i], spacings[i]
        affine = np.diag([*s, 1.0])
        data = v
        if how == "LPS":  # stored as DICOM converters store it: x and y reversed
            data = v[::-1, ::-1, :]
            affine = np.diag([-s[0], -s[1], s[2], 1.0])
            affine[:3, 3] = [(v.shape[0] - 1) * s[0], (v.shape[1] - 1) * s[1], 0.0]
        elif how == "permuted":  # slices first (z, y, x), as some NumPy-born files are
            data = np.transpose(v, (2, 1, 0))
            affine = np.zeros((4, 4))
            affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = s[0], s[1], s[2], 1.0
        nib.save(nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), affine),
                 str(out / f"{CLASSES[labels[i]]}_{i:02d}_{how.lower()}.nii.gz"))
    # the seventh as a CT series: the scan's values mapped to Hounsfield units, files in shuffled order
    hu = (volumes[6] - 0.3) * 400.0
    rng = np.random.default_rng(0)
    write_dicom_series(out / f"{CLASSES[labels[6]]}_06_dicom", hu, spacings[6], origin=(-20.0, -30.0, 10.0),
                       order=rng.permutation(hu.shape[2]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
