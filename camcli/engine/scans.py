"""Reading 3D scans: NIfTI and NumPy files, DICOM series and multi-frame DICOM, into one convention.

Every scan becomes a :class:`Scan`: its voxels as float32 in RAS+ axis order (the array's three
axes run towards the patient's Right, Anterior and Superior, as nibabel's ``as_closest_canonical``
and MONAI's ``Orientation("RAS")`` lay volumes out), the affine that
takes a voxel index to scanner millimetres, the orientation the file stored and how to go back
to it (maps are written on the scan's own grid, with its own affine, so a viewer overlays them
without registration).

A DICOM series is a folder of slices: one volume per SeriesInstanceUID, slices ordered by their
position along the slice normal (never by file name or instance number), the affine built from
ImagePositionPatient, ImageOrientationPatient and PixelSpacing (DICOM's LPS made RAS), stored
values rescaled (CT: Hounsfield units). Series that are no volume (slices in several
orientations, two slices at one position, uneven gaps) are refused with the reason: a map on a
wrongly stacked volume would look plausible and be wrong.

nibabel and pydicom are the optional ``medical`` extra (``pip install camcli[medical]``);
NumPy files need neither (they carry no geometry: an identity affine, or the ``affine`` array
an ``.npz`` holds).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camcli.errors import UsageError

#: file names read as one scan each
NIFTI_SUFFIXES = (".nii", ".nii.gz")
NUMPY_SUFFIXES = (".npy", ".npz")
#: DICOM's patient axes (x to the Left, y Posterior, z Superior) made RAS
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: how far slices may stray from one orientation, and their gaps from even (relative)
ORIENTATION_TOLERANCE = 1e-3
SPACING_TOLERANCE = 0.01


@dataclass(frozen=True)
class Grid:
    """Where a scan's voxels lie, without the voxels: what a map needs to be written on the scan's
    own grid and its peak placed in millimetres after the scan's values are gone."""

    shape: tuple[int, int, int]  # (X, Y, Z) on the RAS+ grid
    affine: np.ndarray  # (4, 4): RAS voxel index -> scanner millimetres
    #: the file's axis codes as stored ("LPS", "RAS", "PSR", ...; "" where a NumPy file says nothing)
    stored: str = ""
    #: nibabel orientation that takes the RAS array back to the file's (``None``: the file is RAS)
    to_stored: np.ndarray | None = None
    stored_affine: np.ndarray | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Millimetres between voxel centres along each RAS axis."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def file_affine(self) -> np.ndarray:
        """The affine of the file's own grid (voxel index as stored -> scanner mm)."""
        return self.stored_affine if self.stored_affine is not None else self.affine

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        return self.on_file_axes(self.shape)

    def on_file_axes(self, per_axis: Sequence) -> tuple:
        """Values given per RAS axis (a shape, a spacing, factors) in the order of the file's axes."""
        if self.to_stored is None:
            return tuple(per_axis)
        return tuple(per_axis[int(axis)] for axis in np.argsort(self.to_stored[:, 0]))

    def millimetres(self, voxel: Sequence[float]) -> tuple[float, float, float]:
        """Scanner (RAS) position of a RAS voxel index, in mm."""
        x = self.affine @ np.array([*map(float, voxel), 1.0])
        return tuple(float(v) for v in x[:3])

    def on_stored_grid(self, volume: np.ndarray) -> np.ndarray:
        """``volume`` (on the RAS grid, at any size) laid out as the file stored the scan, to be
        written with :attr:`file_affine` (a map then overlays the scan in any viewer)."""
        if self.to_stored is None:
            return volume
        nib_orient = _module("nibabel.orientations", "writing maps on a scan's grid")
        return nib_orient.apply_orientation(volume, self.to_stored)

    def stored_index(self, voxel: Sequence[int]) -> tuple[int, int, int]:
        """The file's voxel index of a RAS voxel index."""
        return self._index(self.affine, self.file_affine, voxel)

    def ras_index(self, stored_voxel: Sequence[int]) -> tuple[int, int, int]:
        """The RAS voxel index of a file's voxel index."""
        return self._index(self.file_affine, self.affine, stored_voxel)

    @staticmethod
    def _index(source: np.ndarray, target: np.ndarray, voxel: Sequence[int]) -> tuple[int, int, int]:
        mm = source @ np.array([*map(float, voxel), 1.0])
        return tuple(int(v) for v in np.rint(np.linalg.solve(target, mm)[:3]))


@dataclass(frozen=True)
class Scan:
    """One volume, in RAS+ axis order."""

    voxels: np.ndarray  # (X, Y, Z) float32: stored values rescaled (CT: Hounsfield units)
    affine: np.ndarray  # (4, 4): voxel index (x, y, z) -> scanner millimetres, RAS+
    source: str  # the file, or the DICOM folder and its series
    format: str  # nifti, numpy, dicom
    stored: str  # as :attr:`Grid.stored`
    to_stored: np.ndarray | None = None  # as :attr:`Grid.to_stored`
    stored_affine: np.ndarray | None = None
    modality: str = ""

    @property
    def grid(self) -> Grid:
        return Grid(self.shape, self.affine, self.stored, self.to_stored, self.stored_affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.voxels.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.grid.spacing

    def millimetres(self, voxel: Sequence[float]) -> tuple[float, float, float]:
        return self.grid.millimetres(voxel)

    def on_stored_grid(self, volume: np.ndarray) -> np.ndarray:
        return self.grid.on_stored_grid(volume)


def read_scan(path: str | Path) -> list[Scan]:
    """The scans a path holds: a NIfTI or NumPy file (one), a DICOM file (one, multi-frame or a
    single slice), a folder of DICOM files (one per series)."""
    path = Path(path)
    if path.is_dir():
        return read_dicom_folder(path)
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return [read_nifti(path)]
    if name.endswith(NUMPY_SUFFIXES):
        return [read_numpy(path)]
    return [read_dicom_file(path)]


def read_nifti(path: Path) -> Scan:
    nib = _module("nibabel", "reading NIfTI")
    try:
        image = nib.load(str(path))
    except Exception as e:  # nibabel's errors name no common base: the file is unreadable either way
        raise UsageError(f"{path}: not a readable NIfTI file ({_first_line(e)})") from None
    shape = tuple(image.shape)
    if len(shape) == 4 and shape[3] == 1:
        image = image.slicer[..., 0]
    elif len(shape) != 3:
        raise UsageError(f"{path}: a {len(shape)}-D NIfTI image {shape}; camcli explains 3-D volumes "
                         "(split a time series or a multi-channel image into volumes first)")
    stored = image.affine
    voxels = np.asarray(image.get_fdata(dtype=np.float32))
    return _canonical(voxels, stored, str(path), "nifti", "")


def read_numpy(path: Path) -> Scan:
    """A NumPy volume, read as data only (``allow_pickle=False``): ``.npy`` one (X, Y, Z) array;
    ``.npz`` its ``volume`` (or only) array and an optional 4x4 ``affine``."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UsageError(f"{path}: not a NumPy array file camcli reads as data ({_first_line(e)})") from None
    affine = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            key = "volume" if "volume" in names else next((n for n in names if n != "affine"), None)
            if key is None or (key != "volume" and len([n for n in names if n != "affine"]) > 1):
                raise UsageError(f"{path}: an .npz with arrays {', '.join(names) or 'none'}; name the volume "
                                 "`volume` (and its 4x4 voxel-to-mm matrix `affine`, if it has one)")
            voxels = loaded[key]
            affine = loaded["affine"] if "affine" in names else None
    else:
        voxels = loaded
    if voxels.ndim == 4 and voxels.shape[0] == 1:
        voxels = voxels[0]
    if voxels.ndim != 3 or not np.issubdtype(voxels.dtype, np.number):
        raise UsageError(f"{path}: a {voxels.ndim}-D {voxels.dtype} array {tuple(voxels.shape)}; camcli reads an "
                         "(X, Y, Z) volume of numbers (or (1, X, Y, Z))")
    if affine is not None:
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise UsageError(f"{path}: its `affine` is no invertible 4x4 voxel-to-mm matrix")
        return _canonical(voxels.astype(np.float32), affine, str(path), "numpy", "")
    # no geometry: the array is taken as it is, 1 mm voxels, and said so in the orientation
    return Scan(np.ascontiguousarray(voxels, dtype=np.float32), np.eye(4), str(path), "numpy", "")


def read_dicom_folder(folder: Path) -> list[Scan]:
    """One scan per series among the DICOM files of ``folder`` (not its subfolders)."""
    pydicom = _module("pydicom", "reading DICOM")
    series: dict[str, list] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            header = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception:  # not DICOM (a README, a DICOMDIR's neighbours): not part of a series
            continue
        uid = str(header.get("SeriesInstanceUID", ""))
        if uid and ("ImagePositionPatient" in header or int(header.get("NumberOfFrames", 1) or 1) > 1):
            series.setdefault(uid, []).append(path)
    if not series:
        raise UsageError(f"{folder}: no DICOM image with a position in it (camcli reads a series as a folder of "
                         "its slices)")
    scans = []
    for uid, paths in series.items():
        if len(paths) == 1:
            scans.append(read_dicom_file(paths[0]))
        else:
            scans.append(_series(paths, f"{folder} (series {uid})"))
    return scans


def read_dicom_file(path: Path) -> Scan:
    """A multi-frame DICOM file (enhanced, with a position per frame, or RT dose's frame
    offsets), or one slice (a volume one voxel deep)."""
    pydicom = _module("pydicom", "reading DICOM")
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as e:
        raise UsageError(f"{path}: not a readable DICOM file ({_first_line(e)})") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = _pixels(ds, path)
    if frames == 1:
        return _series([path], str(path), [(ds, pixels)])
    orientation, spacing = _plane(ds, shared=True)
    normal = np.cross(orientation[:3], orientation[3:])
    if "PerFrameFunctionalGroupsSequence" in ds:
        positions = [np.array(g.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
                     for g in ds.PerFrameFunctionalGroupsSequence]
    elif "GridFrameOffsetVector" in ds and "ImagePositionPatient" in ds:
        origin = np.array(ds.ImagePositionPatient, dtype=float)
        positions = [origin + float(o) * normal for o in ds.GridFrameOffsetVector]
    else:
        raise UsageError(f"{path}: a {frames}-frame DICOM file without a position for each frame; camcli stacks "
                         "frames only where the file says where they lie")
    return _stacked(list(pixels), positions, orientation, spacing, str(path), ds)


def _series(paths: list[Path], source: str, read: list | None = None) -> Scan:
    pydicom = _module("pydicom", "reading DICOM")
    slices = read if read is not None else []
    if read is None:
        for p in paths:
            ds = pydicom.dcmread(str(p))
            slices.append((ds, _pixels(ds, p)))
    orientations = [np.array(ds.ImageOrientationPatient, dtype=float) if "ImageOrientationPatient" in ds
                    else None for ds, _ in slices]
    if any(o is None for o in orientations) or any("ImagePositionPatient" not in ds for ds, _ in slices):
        raise UsageError(f"{source}: a slice has no ImagePositionPatient/ImageOrientationPatient; camcli stacks "
                         "slices only where they say where they lie")
    if any(np.abs(o - orientations[0]).max() > ORIENTATION_TOLERANCE for o in orientations):
        raise UsageError(f"{source}: its {len(slices)} slices lie in different orientations (a localizer or a "
                         "radial series), not one volume")
    ds0 = slices[0][0]
    orientation, spacing = _plane(ds0)
    positions = [np.array(ds.ImagePositionPatient, dtype=float) for ds, _ in slices]
    return _stacked([px for _, px in slices], positions, orientation, spacing, source, ds0)


def _stacked(frames: list[np.ndarray], positions: list[np.ndarray], orientation: np.ndarray,
             spacing: tuple[float, float], source: str, ds) -> Scan:
    """Slices (rows, cols) at ``positions`` (LPS mm) as one volume, ordered along the slice normal."""
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    along = np.array([float(p @ normal) for p in positions])
    order = np.argsort(along, kind="stable")
    along = along[order]
    gaps = np.diff(along)
    if len(gaps) and gaps.min() < 1e-3:
        raise UsageError(f"{source}: two slices lie at the same position ({along[int(np.argmin(gaps))]:.2f} mm "
                         "along the normal): several acquisitions in one series; camcli reads one volume each")
    if len(gaps) and (gaps.max() - gaps.min()) > SPACING_TOLERANCE * gaps.mean():
        raise UsageError(f"{source}: its slices are unevenly spaced (gaps from {gaps.min():.2f} to {gaps.max():.2f} "
                         "mm along the normal); resample the series to even spacing first")
    step = float(gaps.mean()) if len(gaps) else float(ds.get("SliceThickness", 1.0) or 1.0)
    first = positions[int(order[0])]
    # voxel (i: column, j: row, k: slice) -> LPS mm
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]  # along a row: the column index grows, PixelSpacing's second value
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = first
    stack = np.stack([frames[int(k)] for k in order], axis=-1)  # (rows, cols, slices)
    voxels = np.transpose(stack, (1, 0, 2)).astype(np.float32)  # (cols, rows, slices): (i, j, k)
    return _canonical(voxels, LPS_TO_RAS @ lps, source, "dicom", str(ds.get("Modality", "")))


def _plane(ds, shared: bool = False) -> tuple[np.ndarray, tuple[float, float]]:
    """(ImageOrientationPatient, PixelSpacing) of a slice, or of an enhanced file's shared groups."""
    orientation, spacing = ds.get("ImageOrientationPatient"), ds.get("PixelSpacing")
    if shared and "SharedFunctionalGroupsSequence" in ds:
        group = ds.SharedFunctionalGroupsSequence[0]
        if "PlaneOrientationSequence" in group:
            orientation = group.PlaneOrientationSequence[0].ImageOrientationPatient
        if "PixelMeasuresSequence" in group:
            spacing = group.PixelMeasuresSequence[0].PixelSpacing
    if orientation is None or spacing is None:
        raise UsageError(f"{getattr(ds, 'filename', 'a DICOM file')}: no ImageOrientationPatient or PixelSpacing; "
                         "camcli stacks slices only where they say where they lie")
    return np.array(orientation, dtype=float), (float(spacing[0]), float(spacing[1]))


def _pixels(ds, path: Path) -> np.ndarray:
    """Stored values rescaled (RescaleSlope/Intercept: CT in Hounsfield units), float32."""
    try:
        pixels = ds.pixel_array
    except Exception as e:  # compressed without a decoder, or no pixel data
        raise UsageError(f"{path}: its pixels cannot be read ({_first_line(e)})") from None
    if pixels.ndim not in (2, 3) or ds.get("SamplesPerPixel", 1) != 1:
        raise UsageError(f"{path}: a colour or {pixels.ndim}-D image; camcli reads grey slices as volumes")
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * slope + intercept


def _canonical(voxels: np.ndarray, affine: np.ndarray, source: str, fmt: str, modality: str) -> Scan:
    """The volume in RAS+ axis order (nibabel's closest canonical), with the way back recorded."""
    orientations = _module("nibabel.orientations", "orienting scans")
    stored = orientations.io_orientation(affine)
    codes = "".join(orientations.aff2axcodes(affine))
    canonical = orientations.axcodes2ornt(("R", "A", "S"))
    to_ras = orientations.ornt_transform(stored, canonical)
    voxels_ras = _reoriented(np.asarray(voxels, dtype=np.float32), to_ras)
    ras_affine = affine @ orientations.inv_ornt_aff(to_ras, voxels.shape)
    back = orientations.ornt_transform(canonical, stored)
    return Scan(voxels_ras, ras_affine, source, fmt, codes, back, np.asarray(affine, dtype=np.float64), modality)


def _reoriented(voxels: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """``apply_orientation(voxels, ornt)`` as a C-ordered array, its flips made in place (most files
    are RAS or LPS, flips only: a CT is then not copied, which would cost another 420 MB); an axis
    order that changes needs one copy."""
    for axis, flip in enumerate(ornt[:, 1]):
        if flip < 0:
            n = voxels.shape[axis]
            for i in range(n // 2):  # slice by slice: a whole-array flip would copy it
                a = (slice(None),) * axis + (i,)
                b = (slice(None),) * axis + (n - 1 - i,)
                keep = voxels[a].copy()
                voxels[a] = voxels[b]
                voxels[b] = keep
    order = [int(v) for v in np.argsort(ornt[:, 0])]
    return voxels if order == [0, 1, 2] else np.ascontiguousarray(voxels.transpose(order))


def _module(name: str, what: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UsageError(f"{what} needs the medical extra: pip install 'camcli[medical]' (nibabel, pydicom)") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
