"""The DICOM network receiver: a DIMSE C-STORE SCP (pynetdicom) that hands each received instance to
the receive use case (voxelpipe.pipeline.receive), one transfer per association (docs/dicom-receiver.md).

`settings` reads and checks its configuration (AE titles mapped to tenants, timeouts, limits); `scp`
runs the service. Neither knows of AWS: the entry points (functions/dicom_receiver, `voxelpipe serve
--dicom-port`) build the receiver from the adapters and pass it in.
"""
