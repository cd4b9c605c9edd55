"""From raw photos to aligned faces: detection, 5 landmarks, the ArcFace template warp.

``python -m trainer.data.align`` and ``python -m trainer.album`` are built on
``align_folder.align_folder``. Only the detector needs the ``align`` extra
(``pip install "facetrain[align]"``: dlib with its model files); the geometry,
the warp and the manifest are NumPy and Pillow.
"""
