"""The study report as an Encapsulated PDF object (PS3.3 A.45.1).

highdicom has no Encapsulated PDF class; its SOPClass base writes the SOP Common, General Series
and General Equipment modules and copies the patient and study modules from the source image, and
the Encapsulated Document module is pydicom attributes (pydicom pads the value to even length).
"""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian
from pydicom.valuerep import DA, TM

from voxelpipe.dicom_outputs.common import MANUFACTURER, MODEL, on_source_timeline, software_versions

DOCUMENT_TITLE = "voxelpipe study report"


def build_encapsulated_pdf(pdf: bytes, source: Dataset, *, series_number: int) -> hd.base.SOPClass:
    """`pdf` filed in `source`'s (de-identified) study, a new series of its own."""
    if not pdf.startswith(b"%PDF"):
        raise ValueError("the report is not a PDF document")
    document = hd.base.SOPClass(
        study_instance_uid=source.StudyInstanceUID,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        sop_class_uid=EncapsulatedPDFStorage,
        instance_number=1,
        modality="DOC",
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL,
        software_versions=software_versions(),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=DOCUMENT_TITLE,
    )
    document.copy_patient_and_study_information(source)
    document.ConversionType = "WSD"  # workstation: made by software, not scanned
    document.InstanceNumber = 1
    document.ContentDate = DA("19000101")  # replaced below: dated as the source is
    document.ContentTime = TM("000000")
    document.AcquisitionDateTime = "19000101000000"
    document.BurnedInAnnotation = "NO"  # the report carries pseudonymous identifiers only
    document.DocumentTitle = DOCUMENT_TITLE
    document.ConceptNameCodeSequence = []
    document.MIMETypeOfEncapsulatedDocument = "application/pdf"
    document.EncapsulatedDocument = pdf
    document.EncapsulatedDocumentLength = len(pdf)
    on_source_timeline(document, source)
    return document
