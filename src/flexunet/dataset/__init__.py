"""Datasets on disk: mask and DICOM formats, manifest and split records, the leak record; prepare, split, augment, stats."""
