"""Writing a realistic MR Image Storage series, or Enhanced MR object (for tests and demos): scanner-like tags,
optional shuffling."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileDataset
from pydicom.uid import generate_uid

from synthct.dicom.errors import DicomError
from synthct.dicom.geometry import SliceStack, ds_text, slice_stack
from synthct.dicom.identity import checked_identity
from synthct.dicom.write import (
    LO_MAX,
    new_file_dataset,
    set_character_set,
    set_equipment,
    set_identity,
    set_moments,
    set_pixels,
    set_plane,
    text_value,
    write_series_files,
)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
UINT16_MAX = 65535


def write_mr_series(image: sitk.Image, folder: Path, *, identity: Mapping[str, str] | None = None,
                    suffix: str = ".dcm", shuffle_seed: int | None = None,
                    series_description: str = "T1 MPRAGE") -> list[Path]:
    """Write ``image`` (3-D MR, any pixel type) as an MR series into ``folder``; returns the files sorted by name.

    Values are stored as uint16: as they are for integer images within 0..65535, else with RescaleSlope and
    RescaleIntercept (within half a slope). Files are named ``IM0001`` + ``suffix`` (``""`` for none). With
    ``shuffle_seed``, file names and InstanceNumbers are two random permutations of the slice order, so a reader
    must order by ImagePositionPatient. ``identity`` overrides the fresh phantom patient / study / frame of
    reference attributes. The folder is written atomically.
    """
    folder = Path(folder)
    stack = slice_stack(image, str(folder))
    values = stack.voxels.astype(np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        raise DicomError(f"{folder}: the MR is empty or has non-finite (NaN/inf) voxels")
    slope, intercept = _rescale(values)
    stored = np.clip(np.rint((values - intercept) / slope), 0, UINT16_MAX).astype(np.uint16)
    ids = _phantom_identity()
    if identity is not None:
        ids.update(checked_identity(identity))
    n_slices = len(stored)
    file_order, instance_order = np.arange(n_slices), np.arange(n_slices)
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        file_order, instance_order = _shuffled(rng, n_slices), _shuffled(rng, n_slices)
    names = [f"IM{int(k) + 1:0{max(4, len(str(n_slices)))}d}{suffix}" for k in file_order]
    datasets = _mr_datasets(stack, stored, (slope, intercept), ids, series_description, instance_order)
    paths = write_series_files(folder, ((names[i], ds) for i, ds in enumerate(datasets)))
    return sorted(paths)


def _shuffled(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random permutation of 0..n-1 that is not the identity (for n > 1)."""
    order = rng.permutation(n)
    if n > 1 and np.array_equal(order, np.arange(n)):
        order = np.roll(order, 1)
    return order


def _rescale(values: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) mapping the values onto uint16; both exactly representable as DS text."""
    low, high = float(values.min()), float(values.max())
    if np.array_equal(values, np.rint(values)) and low >= 0 and high <= UINT16_MAX:
        return 1.0, 0.0
    intercept = float(ds_text(low))
    slope = float(ds_text(max(high - intercept, 1e-6) / (UINT16_MAX - 1)))
    return slope, intercept


def _phantom_identity() -> dict[str, str]:
    study_uid = generate_uid()
    return {
        "PatientName": "PHANTOM^MR",
        "PatientID": f"PHANTOM-{study_uid[-8:]}",
        "PatientBirthDate": "19700101",
        "PatientSex": "O",
        "StudyInstanceUID": study_uid,
        "StudyID": "1",
        "StudyDescription": "MR for radiotherapy planning",
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "FrameOfReferenceUID": generate_uid(),
        "PositionReferenceIndicator": "",
        "PatientPosition": "HFS",
        "BodyPartExamined": "HEAD",
    }


def _mr_datasets(stack: SliceStack, stored: np.ndarray, rescale: tuple[float, float], identity: dict[str, str],
                 series_description: str, instance_order: np.ndarray) -> Iterator[FileDataset]:
    moment = datetime.now()
    series_uid = generate_uid()
    description = text_value(series_description, LO_MAX)
    low, high = float(stored.min()) * rescale[0] + rescale[1], float(stored.max()) * rescale[0] + rescale[1]
    for index, slice_values in enumerate(stored):
        dataset = new_file_dataset(MR_IMAGE_STORAGE, generate_uid())
        set_character_set(dataset, [*identity.values(), description])
        set_identity(dataset, identity, moment)
        set_moments(dataset, moment)
        dataset.AcquisitionDate, dataset.AcquisitionTime = dataset.SeriesDate, dataset.SeriesTime
        set_equipment(dataset)
        dataset.Modality = "MR"
        dataset.SeriesInstanceUID = series_uid
        dataset.SeriesNumber = 3
        dataset.SeriesDescription = description
        dataset.ProtocolName = description
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        dataset.InstanceNumber = int(instance_order[index]) + 1
        dataset.AcquisitionNumber = 1
        dataset.PatientOrientation = ""
        dataset.ScanningSequence = ["GR", "IR"]
        dataset.SequenceVariant = ["SP", "MP"]
        dataset.ScanOptions = ""
        dataset.MRAcquisitionType = "3D"
        dataset.SequenceName = "*tfl3d1_16ns"
        dataset.AngioFlag = "N"
        dataset.RepetitionTime = "2300"
        dataset.EchoTime = "2.98"
        dataset.InversionTime = "900"
        dataset.FlipAngle = "9"
        dataset.EchoTrainLength = 1
        dataset.EchoNumbers = [1]
        dataset.NumberOfAverages = "1"
        dataset.ImagingFrequency = "123.2"
        dataset.ImagedNucleus = "1H"
        dataset.MagneticFieldStrength = "3"
        dataset.PixelBandwidth = "240"
        dataset.ReceiveCoilName = "HeadNeck_20"
        set_plane(dataset, stack, index)
        set_pixels(dataset, slice_values)
        if rescale != (1.0, 0.0):  # as some scanners do; not part of the standard MR IOD (dciodvfy warns)
            dataset.RescaleIntercept = ds_text(rescale[1])
            dataset.RescaleSlope = ds_text(rescale[0])
        dataset.WindowCenter = ds_text((low + high) / 2)
        dataset.WindowWidth = ds_text(max(high - low, 1.0))
        yield dataset


ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
_STACK_ID, _IN_STACK_POSITION, _EFFECTIVE_ECHO_TIME = 0x00209056, 0x00209057, 0x00189082
_FRAME_CONTENT, _MR_ECHO = 0x00209111, 0x00189114


def write_enhanced_mr(images: sitk.Image | Sequence[sitk.Image], folder: Path, *,
                      identity: Mapping[str, str] | None = None, echo_times_ms: Sequence[float] | None = None,
                      shuffle_seed: int | None = None, per_frame: Collection[str] = (),
                      frames_per_file: int | None = None, series_description: str = "T1 MPRAGE") -> list[Path]:
    """Write ``images`` (3-D MR volumes, one stack each) as one Enhanced MR Image Storage series into ``folder``.

    A scanner-like ORIGINAL multi-frame object: geometry in the functional groups (PlanePositionSequence per frame;
    PixelMeasuresSequence, PlaneOrientationSequence and PixelValueTransformationSequence shared, or per frame when
    named in ``per_frame``; an orientation that differs between stacks is always per frame), MREchoSequence per frame,
    dimensions StackID, InStackPositionNumber and EffectiveEchoTime. Stacks of one geometry share StackID "1" and
    must differ in echo time (``echo_times_ms``, one per image; default 2.98 ms each); stacks of different geometry
    get StackIDs "1", "2", ... All images need the same in-plane matrix (Rows, Columns). Values are stored as
    uint16 with one shared rescale (see :func:`write_mr_series`). With ``shuffle_seed`` the frames are stored in a
    random order. ``frames_per_file`` splits the frames over several files of one series (``EMR0001.dcm`` ...).
    Returns the files sorted by name; the folder is written atomically.
    """
    folder = Path(folder)
    image_list = [images] if isinstance(images, sitk.Image) else list(images)
    if not image_list:
        raise DicomError(f"{folder}: no image to write")
    stacks = [slice_stack(image, str(folder)) for image in image_list]
    if len({s.voxels.shape[1:] for s in stacks}) != 1:
        raise DicomError(f"{folder}: the stacks of one multi-frame object need one matrix (Rows, Columns), got "
                         f"{[s.voxels.shape[1:] for s in stacks]}")
    echoes = [2.98] * len(stacks) if echo_times_ms is None else [float(t) for t in echo_times_ms]
    if len(echoes) != len(stacks):
        raise DicomError(f"{folder}: {len(echoes)} echo time(s) for {len(stacks)} image(s)")
    stack_ids = _stack_ids(stacks)
    if len({(sid, echo) for sid, echo in zip(stack_ids, echoes, strict=True)}) != len(stacks):
        raise DicomError(f"{folder}: images of one geometry need different echo times to be told apart")
    values = np.concatenate([s.voxels.astype(np.float64) for s in stacks])
    if values.size == 0 or not np.isfinite(values).all():
        raise DicomError(f"{folder}: the MR is empty or has non-finite (NaN/inf) voxels")
    slope, intercept = _rescale(values)
    ids = _phantom_identity()
    if identity is not None:
        ids.update(checked_identity(identity))
    frames = [(k, index) for k, stack in enumerate(stacks) for index in range(len(stack.voxels))]
    if shuffle_seed is not None:
        frames = [frames[i] for i in _shuffled(np.random.default_rng(shuffle_seed), len(frames))]
    per_file = frames_per_file or len(frames)
    if per_file < 1:
        raise DicomError(f"{folder}: frames_per_file must be at least 1, got {frames_per_file}")
    chunks = [frames[start:start + per_file] for start in range(0, len(frames), per_file)]
    series = _EnhancedSeries(stacks, stack_ids, echoes, (slope, intercept), ids,
                             text_value(series_description, LO_MAX), frozenset(per_frame))
    datasets = ((f"EMR{n + 1:04d}.dcm", series.dataset(chunk, n + 1)) for n, chunk in enumerate(chunks))
    return sorted(write_series_files(folder, datasets))


def _stack_ids(stacks: list[SliceStack]) -> list[str]:
    """StackID per image: equal for images with the same plane geometry (orientation, positions, spacing)."""
    ids: list[str] = []
    seen: list[SliceStack] = []
    for stack in stacks:
        for number, other in enumerate(seen, start=1):
            same_shape = stack.voxels.shape == other.voxels.shape
            if (same_shape and np.allclose(stack.orientation, other.orientation, atol=1e-6)
                    and np.allclose(stack.positions_mm, other.positions_mm, atol=1e-4)):
                ids.append(str(number))
                break
        else:
            seen.append(stack)
            ids.append(str(len(seen)))
    return ids


@dataclass(frozen=True)
class _EnhancedSeries:
    """What the files of one Enhanced MR series share; :meth:`dataset` builds one file from a list of frames."""

    stacks: list[SliceStack]
    stack_ids: list[str]
    echoes_ms: list[float]
    rescale: tuple[float, float]
    identity: dict[str, str]
    description: str
    per_frame: frozenset[str]
    series_uid: str = field(default_factory=generate_uid)
    moment: datetime = field(default_factory=datetime.now)
    dimension_uid: str = field(default_factory=generate_uid)

    def dataset(self, frames: list[tuple[int, int]], instance_number: int) -> FileDataset:
        """The Enhanced MR file holding ``frames`` ((image index, slice index) in file order)."""
        dataset = new_file_dataset(ENHANCED_MR_IMAGE_STORAGE, generate_uid())
        set_character_set(dataset, [*self.identity.values(), self.description])
        set_identity(dataset, self.identity, self.moment)
        set_moments(dataset, self.moment)
        set_equipment(dataset)
        dataset.DeviceSerialNumber = "0001"
        dataset.Modality = "MR"
        dataset.SeriesInstanceUID = self.series_uid
        dataset.SeriesNumber = 3
        dataset.SeriesDescription = self.description
        dataset.ProtocolName = self.description
        dataset.InstanceNumber = instance_number
        self._set_image_attributes(dataset)
        self._set_pulse_sequence(dataset)
        dataset.AcquisitionContextSequence = []
        dataset.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=self.dimension_uid)]
        dataset.DimensionIndexSequence = [
            _item(DimensionOrganizationUID=self.dimension_uid, DimensionIndexPointer=pointer,
                  FunctionalGroupPointer=group, DimensionDescriptionLabel=label)
            for pointer, group, label in ((_STACK_ID, _FRAME_CONTENT, "Stack ID"),
                                          (_IN_STACK_POSITION, _FRAME_CONTENT, "In-Stack Position Number"),
                                          (_EFFECTIVE_ECHO_TIME, _MR_ECHO, "Effective Echo Time"))
        ]
        shared = self._shared_groups()
        orientations = {self.stacks[k].orientation for k, _ in frames}
        moved = set(self.per_frame) | ({"PlaneOrientationSequence"} if len(orientations) > 1 else set())
        per_frame_items = []
        for k, index in frames:
            item = self._frame_groups(k, index)
            for keyword in moved:
                if keyword == "PlaneOrientationSequence":
                    item.PlaneOrientationSequence = [_item(ImageOrientationPatient=[ds_text(v) for v in
                                                                                    self.stacks[k].orientation])]
                elif keyword in shared:
                    item[keyword] = shared[keyword]
            per_frame_items.append(item)
        for keyword in moved:
            if keyword in shared:
                del shared[keyword]
        dataset.SharedFunctionalGroupsSequence = [shared]
        dataset.PerFrameFunctionalGroupsSequence = per_frame_items
        dataset.NumberOfFrames = len(frames)
        stored = np.stack([self._stored(k)[index] for k, index in frames])
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.Rows, dataset.Columns = (int(n) for n in stored.shape[1:])
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
        dataset.PixelRepresentation = 0
        dataset.PixelData = np.ascontiguousarray(stored.astype("<u2")).tobytes()
        return dataset

    def _stored(self, k: int) -> np.ndarray:
        slope, intercept = self.rescale
        values = self.stacks[k].voxels.astype(np.float64)
        return np.clip(np.rint((values - intercept) / slope), 0, UINT16_MAX).astype(np.uint16)

    def _set_image_attributes(self, dataset: FileDataset) -> None:
        """Enhanced MR Image module (and the MR Image Description macro at the top level)."""
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        dataset.AcquisitionNumber = 1
        dataset.AcquisitionDateTime = self.moment.strftime("%Y%m%d%H%M%S")
        dataset.AcquisitionDuration = 300.0
        dataset.ContentQualification = "RESEARCH"
        dataset.ResonantNucleus = "1H"
        dataset.KSpaceFiltering = "NONE"
        dataset.MagneticFieldStrength = "3"
        dataset.ApplicableSafetyStandardAgency = "IEC"
        dataset.ImageComments = "Test object written by synthct"
        dataset.PixelPresentation = "MONOCHROME"
        dataset.VolumetricProperties = "VOLUME"
        dataset.VolumeBasedCalculationTechnique = "NONE"
        dataset.ComplexImageComponent = "MAGNITUDE"
        dataset.AcquisitionContrast = "T1"
        dataset.BurnedInAnnotation = "NO"
        dataset.LossyImageCompression = "00"
        dataset.PresentationLUTShape = "IDENTITY"

    @staticmethod
    def _set_pulse_sequence(dataset: FileDataset) -> None:
        """MR Pulse Sequence module of a 3-D gradient echo (MPRAGE-like)."""
        dataset.PulseSequenceName = "tfl3d1"
        dataset.MRAcquisitionType = "3D"
        dataset.EchoPulseSequence = "GRADIENT"
        dataset.MultiPlanarExcitation = "NO"
        dataset.PhaseContrast = "NO"
        dataset.TimeOfFlightContrast = "NO"
        dataset.SteadyStatePulseSequence = "NONE"
        dataset.EchoPlanarPulseSequence = "NO"
        dataset.SaturationRecovery = "NO"
        dataset.SpectrallySelectedSuppression = "NONE"
        dataset.OversamplingPhase = "NONE"
        dataset.GeometryOfKSpaceTraversal = "RECTILINEAR"
        dataset.RectilinearPhaseEncodeReordering = "LINEAR"
        dataset.SegmentedKSpaceTraversal = "SINGLE"
        dataset.CoverageOfKSpace = "FULL"
        dataset.NumberOfKSpaceTrajectories = 1

    def _shared_groups(self) -> Dataset:
        stack = self.stacks[0]
        slope, intercept = self.rescale
        values = np.concatenate([s.voxels.ravel() for s in self.stacks])
        low, high = float(values.min()), float(values.max())
        shared = Dataset()
        shared.PixelMeasuresSequence = [_item(PixelSpacing=stack.pixel_spacing,
                                              SliceThickness=ds_text(stack.spacing_mm[2]),
                                              SpacingBetweenSlices=ds_text(stack.spacing_mm[2]))]
        shared.PlaneOrientationSequence = [_item(ImageOrientationPatient=[ds_text(v) for v in stack.orientation])]
        shared.PixelValueTransformationSequence = [_item(RescaleIntercept=ds_text(intercept),
                                                         RescaleSlope=ds_text(slope), RescaleType="US")]
        shared.FrameVOILUTSequence = [_item(WindowCenter=ds_text((low + high) / 2),
                                            WindowWidth=ds_text(max(high - low, 1.0)))]
        body_part = self.identity.get("BodyPartExamined", "") or "HEAD"
        region = _item(CodeValue="69536005", CodingSchemeDesignator="SCT", CodeMeaning="Head") \
            if body_part == "HEAD" else _item(CodeValue="38266002", CodingSchemeDesignator="SCT",
                                              CodeMeaning="Entire body")
        shared.FrameAnatomySequence = [_item(AnatomicRegionSequence=[region], FrameLaterality="U")]
        shared.MRImageFrameTypeSequence = [_item(FrameType=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"],
                                                 PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
                                                 VolumeBasedCalculationTechnique="NONE",
                                                 ComplexImageComponent="MAGNITUDE", AcquisitionContrast="T1")]
        shared.MRTimingAndRelatedParametersSequence = [_item(
            RepetitionTime=2300.0, FlipAngle=9.0, EchoTrainLength=1, RFEchoTrainLength=0, GradientEchoTrainLength=1,
            SpecificAbsorptionRateSequence=[_item(SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                                                  SpecificAbsorptionRateValue=0.5)],
            GradientOutputType="DB_DT", GradientOutput=10.0,
            OperatingModeSequence=[_item(OperatingModeType=kind, OperatingMode="IEC_NORMAL")
                                   for kind in ("STATIC FIELD", "RF", "GRADIENT")])]
        rows, columns = (int(n) for n in stack.voxels.shape[1:])
        shared.MRFOVGeometrySequence = [_item(
            InPlanePhaseEncodingDirection="ROW", MRAcquisitionFrequencyEncodingSteps=columns,
            MRAcquisitionPhaseEncodingStepsInPlane=rows,
            MRAcquisitionPhaseEncodingStepsOutOfPlane=len(stack.voxels), PercentSampling=100.0,
            PercentPhaseFieldOfView=100.0)]
        shared.MRModifierSequence = [_item(
            InversionRecovery="YES", InversionTimes=[900.0], FlowCompensation="NONE", Spoiling="RF",
            T2Preparation="NO", SpectrallySelectedExcitation="NONE", SpatialPresaturation="NONE",
            PartialFourier="NO", ParallelAcquisition="NO")]
        shared.MRImagingModifierSequence = [_item(
            MagnetizationTransfer="NONE", BloodSignalNulling="NO", Tagging="NONE", TransmitterFrequency=123.2,
            PixelBandwidth=240.0)]
        shared.MRReceiveCoilSequence = [_item(
            ReceiveCoilName="HeadNeck_20", ReceiveCoilManufacturerName="synthct", ReceiveCoilType="MULTICOIL",
            QuadratureReceiveCoil="NO", MultiCoilDefinitionSequence=[_item(MultiCoilElementName="HE1-4",
                                                                           MultiCoilElementUsed="YES")])]
        shared.MRTransmitCoilSequence = [_item(TransmitCoilName="Body", TransmitCoilManufacturerName="synthct",
                                               TransmitCoilType="BODY")]
        shared.MRAveragesSequence = [_item(NumberOfAverages=1.0)]
        shared.MRSpatialSaturationSequence = []
        shared.MRDiffusionSequence = [_item(DiffusionBValue=0.0, DiffusionDirectionality="NONE")]
        return shared

    def _frame_groups(self, k: int, index: int) -> Dataset:
        stack = self.stacks[k]
        echo_rank = sorted(set(self.echoes_ms)).index(self.echoes_ms[k]) + 1
        moment = self.moment.strftime("%Y%m%d%H%M%S")
        item = Dataset()
        item.FrameContentSequence = [_item(
            FrameAcquisitionNumber=1, FrameReferenceDateTime=moment, FrameAcquisitionDateTime=moment,
            FrameAcquisitionDuration=300000.0, StackID=self.stack_ids[k], InStackPositionNumber=index + 1,
            DimensionIndexValues=[int(self.stack_ids[k]), index + 1, echo_rank])]
        item.PlanePositionSequence = [_item(ImagePositionPatient=[ds_text(v) for v in stack.positions_mm[index]])]
        item.MREchoSequence = [_item(EffectiveEchoTime=self.echoes_ms[k])]
        return item


def _item(**values: object) -> Dataset:
    """A sequence item with the given attributes (keyword = value)."""
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item
