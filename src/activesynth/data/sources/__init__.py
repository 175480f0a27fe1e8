"""Loaders that turn data on disk into an :class:`~activesynth.data.imageset.ImageSet`.

One module per format or dataset: ``folder`` (PNG / JPEG / TIFF folders), ``nifti`` (3D volumes
sliced to 2D), ``dicom`` (2D DICOM files and series). Import the module you need; this package
deliberately imports nothing so that loading one format never pulls in another's dependencies.
"""
