"""DICOM series -> NIfTI: voxelpipe.dicom against dcm2niix on the same files in the same run.

    python bench/dicom_series.py [--slices 200] [--size 512] [--repeat N] [--json]

Makes a synthetic MR series (200 slices of 512x512 int16, explicit VR little endian, headers with
the usual identifying and acquisition attributes and a 6 KiB private CSA-like block, as a scanner
writes) in a temporary folder, then times, best of N wall-clock runs, on the same files:

* ours:            assemble_series(the files' bytes, already in memory as Prepare gets them from
                   S3) -> the .nii bytes (SeriesVolume.nifti_bytes: the header written in front
                   of the voxels, no copy).  The volume comes out RAS+ (canonical), which dcm2niix
                   does not do (it keeps the acquisition order and flips rows);
* ours+gzip:       the same, then gzip with ISA-L at level 1 (what voxelpipe writes);
* ours via to_nifti_bytes: the same through voxelpipe.nifti.to_nifti_bytes (nibabel serialises
                   the image: one more copy of the voxels, into fresh pages);
* ours files->file: the files in (mmap'd), the .nii written out, as dcm2niix does;
* dcm2niix -z n:   uncompressed .nii (the peer for "ours");
* dcm2niix -z y:   gzip through pigz when it is installed (its default level 6, all cores), else
                   its internal zlib -- the table says which (the peer for "ours+gzip");
* dcm2niix -z y -1: pigz at level 1, for a like-for-like compression level (informational).

dcm2niix's runs include its process start and its JSON sidecar (-b y, its default).  The ratio is
ours / dcm2niix (lower is better); targets: <= 0.7 uncompressed, <= 0.5 gzip.  A sanity check
confirms both outputs hold the same voxels at the same world coordinates.  Exits 0 whatever the
figures.

Where the time goes (2-core dev box, busy with other work): ours is ~70 ms of header parsing
(pydicom, ~0.35 ms a file of ~100 elements: read_preamble and read_dataset with specific_tags,
stopping at Pixel Data; dcmread(stop_before_pixels=True) takes ~0.7 ms a file, its FileDataset
and FileMetaDataset wrappers and value conversions being the difference, and converting the
kept values through pydicom would add ~0.3 ms a file) and ~28 ms copying pixels into the one
volume buffer (numpy allocates it with huge pages, so it faults in cheaply; a fresh 100 MB
``bytes``, as nibabel's to_bytes makes, costs ~70 ms of page faults alone -- the "via
to_nifti_bytes" row).  dcm2niix took ~190 ms on this series; with
MRAcquisitionType 3D instead of 2D it took ~430 ms, ours unchanged.  gzip: ISA-L level 1 runs at
~240 MB/s on one core; pigz -6 ~6 MB/s a core on this noisy image (pigz -1: ~40 MB/s a core).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import nibabel as nib
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from timing import best_s

from voxelpipe.dicom import assemble_series
from voxelpipe.nifti import to_nifti_bytes

TARGET_PLAIN = 0.7
TARGET_GZIP = 0.5


def phantom_slice(k: int, n: int, size: int, rng: np.random.Generator) -> npt.NDArray[np.int16]:
    """A head-like slice: an ellipse of tissue with a darker core, Rician-ish background noise."""
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    z = -1 + 2 * k / max(n - 1, 1)
    head = (x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 0.85) ** 2 < 1
    core = (x / 0.25) ** 2 + (y / 0.35) ** 2 + (z / 0.3) ** 2 < 1
    tissue = 700 + 250 * np.cos(6 * x) * np.sin(5 * y) - 400 * core
    noise = np.abs(rng.normal(0, 12, (size, size)) + 1j * rng.normal(0, 12, (size, size)))
    values = np.where(head, tissue + rng.normal(0, 20, (size, size)), noise)
    return np.clip(values, 0, 4095).astype(np.int16)


def slice_dataset(k: int, n: int, size: int, uids: dict[str, str], pixels: npt.NDArray[np.int16]) -> Dataset:
    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]
    ds.InstanceCreationDate, ds.InstanceCreationTime = "20240105", "102300"
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240105"
    ds.StudyTime, ds.SeriesTime, ds.AcquisitionTime, ds.ContentTime = "101500", "102000", "102100", "102200"
    ds.AccessionNumber, ds.Modality, ds.Manufacturer = "ACC5555", "MR", "ACME"
    ds.InstitutionName, ds.InstitutionAddress = "St Elsewhere Hospital", "2 Hospital Rd"
    ds.ReferringPhysicianName, ds.StationName = "House^Gregory", "MRI-1"
    ds.StudyDescription, ds.SeriesDescription = "BRAIN ROUTINE", "T2 TSE TRA"
    ds.InstitutionalDepartmentName, ds.PerformingPhysicianName = "Radiology", "Quinn^Michaela"
    ds.OperatorsName, ds.ManufacturerModelName = "Tech^Terry", "Magnetom"
    referenced = Dataset()
    referenced.ReferencedSOPClassUID, referenced.ReferencedSOPInstanceUID = MRImageStorage, uids["localizer"]
    ds.ReferencedImageSequence = Sequence([referenced])
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "MRN0012345", "19700131"
    ds.PatientSex, ds.PatientAge, ds.PatientSize, ds.PatientWeight = "F", "055Y", 1.68, 61.5
    ds.BodyPartExamined, ds.ScanningSequence, ds.SequenceVariant = "HEAD", "SE", "SK\\SP"
    # A 2-D acquisition: dcm2niix takes its fast path (with "3D" it took 2.3x as long here).
    ds.ScanOptions, ds.MRAcquisitionType, ds.SequenceName = "PFP", "2D", "*tse2d1_15"
    ds.SliceThickness, ds.RepetitionTime, ds.EchoTime = 1.0, 6000.0, 95.0
    ds.NumberOfAverages, ds.ImagingFrequency, ds.ImagedNucleus = 1.0, 123.25, "1H"
    ds.EchoNumbers, ds.MagneticFieldStrength, ds.SpacingBetweenSlices = 1, 3.0, 1.0
    ds.NumberOfPhaseEncodingSteps, ds.EchoTrainLength, ds.PercentSampling = 256, 15, 100.0
    ds.PercentPhaseFieldOfView, ds.PixelBandwidth, ds.DeviceSerialNumber = 100.0, 240.0, "SN4242"
    ds.SoftwareVersions, ds.ProtocolName = "syngo MR E11", "t2_tse_tra"
    ds.TransmitCoilName, ds.AcquisitionMatrix = "Body", [0, 256, 256, 0]
    ds.InPlanePhaseEncodingDirection, ds.FlipAngle, ds.SAR = "ROW", 150.0, 0.05
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
    ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber, ds.InstanceNumber = "1", 3, 1, k + 1
    ds.ImagePositionPatient = [-128.0, -128.0, -100.0 + k * 1.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = uids["frame"], ""
    ds.SliceLocation = -100.0 + k * 1.0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [256.0 / size, 256.0 / size]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SmallestImagePixelValue, ds.LargestImagePixelValue = 0, 4095
    ds.WindowCenter, ds.WindowWidth = 600.0, 1200.0
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", b"SV10\x04\x03\x02\x01" + bytes(6 * 1024))  # a CSA-like blob
    block.add_new(0x20, "OB", b"SV10\x04\x03\x02\x01" + bytes(2 * 1024))
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def make_series(folder: Path, n: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    uids = {name: str(generate_uid()) for name in ("study", "series", "frame", "localizer")}
    paths = []
    for k in range(n):
        path = folder / f"IM{k:05d}.dcm"
        slice_dataset(k, n, size, uids, phantom_slice(k, n, size, rng)).save_as(
            path, enforce_file_format=True
        )
        paths.append(path)
    return paths


def dcm2niix_runner(exe: str, source: Path, out: Path, extra: list[str]) -> Callable[[], None]:
    def run() -> None:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        subprocess.run(
            [exe, *extra, "-f", "vol", "-o", str(out), str(source)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    return run


def same_volume(ours: nib.Nifti1Image, path: Path) -> bool:
    theirs = nib.as_closest_canonical(nib.load(path))  # type: ignore[no-untyped-call]
    return bool(
        ours.shape == theirs.shape
        and np.allclose(ours.affine, theirs.affine, atol=1e-3)
        and np.array_equal(np.asanyarray(ours.dataobj), np.asanyarray(theirs.dataobj))
    )


def measure(n: int, size: int, repeat: int) -> dict[str, Any]:
    exe = shutil.which("dcm2niix")
    with tempfile.TemporaryDirectory(prefix="dicom-bench-") as tmp:
        root = Path(tmp)
        source = root / "dicom"
        source.mkdir()
        paths = make_series(source, n, size)
        data = [p.read_bytes() for p in paths]
        ours_nii = root / "ours.nii"

        def ours() -> object:
            return assemble_series(data).nifti_bytes(compress=False)

        def ours_gzip() -> object:
            return assemble_series(data).nifti_bytes(compress=True, level=1)

        def ours_api() -> object:
            return to_nifti_bytes(assemble_series(data).image, compress=False)

        def ours_files() -> None:
            # As a local tool would: map the files (the page cache, no copy), assemble, write;
            # and, as dcm2niix's runs do, clear the previous output first.
            ours_nii.unlink(missing_ok=True)
            maps = []
            for path in paths:
                with path.open("rb") as f:
                    maps.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
            views = [memoryview(m) for m in maps]
            volume = assemble_series(views)
            ours_nii.write_bytes(volume.nifti_bytes(compress=False))
            del volume
            for view in views:
                view.release()
            for m in maps:
                m.close()

        gz_repeat = max(1, min(repeat, 3))  # gzip runs take seconds each
        times: dict[str, float] = {
            "ours": best_s(ours, repeat),
            "ours+gzip": best_s(ours_gzip, gz_repeat),
            "ours via to_nifti_bytes": best_s(ours_api, repeat),
            "ours files->file": best_s(ours_files, repeat),
        }
        volume = assemble_series(data)
        result: dict[str, Any] = {
            "series": {"slices": n, "rows": size, "columns": size, "bytes": sum(len(d) for d in data)},
            "cpus": os.cpu_count(),
            "ours_gzip_bytes": len(volume.nifti_bytes(compress=True, level=1)),
            "dcm2niix": None,
        }
        if exe is not None:
            version = subprocess.run([exe, "-v"], capture_output=True, text=True, check=False).stdout.strip()
            out = root / "out"
            plain = dcm2niix_runner(exe, source, out, ["-z", "n"])
            times["dcm2niix -z n"] = best_s(plain, repeat)
            plain()
            identical = same_volume(volume.image, out / "vol.nii")
            gz = dcm2niix_runner(exe, source, out, ["-z", "y"])
            times["dcm2niix -z y"] = best_s(gz, gz_repeat, warmup=False)
            gz_size = (out / "vol.nii.gz").stat().st_size
            times["dcm2niix -z y -1"] = best_s(
                dcm2niix_runner(exe, source, out, ["-z", "y", "-1"]), gz_repeat, False
            )
            pigz = shutil.which("pigz")
            result["dcm2niix"] = {
                "version": version.splitlines()[-1] if version else "unknown",
                "gzip": f"pigz ({pigz}), level 6 (its default), {os.cpu_count()} threads"
                if pigz
                else "internal zlib (miniz), level 6",
                "gzip_bytes": gz_size,
                "same_voxels_and_affine": identical,
            }
            result["ratios"] = {
                "ours / dcm2niix -z n": times["ours"] / times["dcm2niix -z n"],
                "ours+gzip / dcm2niix -z y": times["ours+gzip"] / times["dcm2niix -z y"],
                "ours+gzip / dcm2niix -z y -1": times["ours+gzip"] / times["dcm2niix -z y -1"],
                "ours via to_nifti_bytes / dcm2niix -z n": times["ours via to_nifti_bytes"]
                / times["dcm2niix -z n"],
                "ours files->file / dcm2niix -z n": times["ours files->file"] / times["dcm2niix -z n"],
            }
            result["targets"] = {
                "ours / dcm2niix -z n <= 0.7": result["ratios"]["ours / dcm2niix -z n"] <= TARGET_PLAIN,
                "ours+gzip / dcm2niix -z y <= 0.5": result["ratios"]["ours+gzip / dcm2niix -z y"]
                <= TARGET_GZIP,
            }
        result["seconds"] = times
        return result


def print_table(result: dict[str, Any], out: TextIO = sys.stdout) -> None:
    series = result["series"]
    print(
        f"DICOM series {series['slices']} x {series['rows']}x{series['columns']} int16 "
        f"({series['bytes'] / 1e6:.0f} MB), {result['cpus']} CPUs",
        file=out,
    )
    for name, seconds in result["seconds"].items():
        print(f"  {name:<26} {seconds * 1000:9.1f} ms", file=out)
    info = result["dcm2niix"]
    if info is None:
        print("  dcm2niix not found: no peer to compare with", file=out)
        return
    print(f"  dcm2niix: {info['version']}; -z y gzip: {info['gzip']}", file=out)
    print(
        f"  gzip sizes: ours (ISA-L level 1) {result['ours_gzip_bytes'] / 1e6:.1f} MB, "
        f"dcm2niix -z y {info['gzip_bytes'] / 1e6:.1f} MB",
        file=out,
    )
    print(f"  same voxels and affine as dcm2niix (world space): {info['same_voxels_and_affine']}", file=out)
    for name, ratio in result["ratios"].items():
        print(f"  {name:<42} {ratio:6.3f}", file=out)
    for name, ok in result["targets"].items():
        print(f"  target {name}: {'met' if ok else 'NOT met'}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    result = measure(args.slices, args.size, args.repeat)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
