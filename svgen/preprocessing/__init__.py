"""svgen.preprocessing: real videos and photos -> FFHQ-aligned, temporally stable face crops.

Modules (imported on demand; nothing heavy is loaded by ``import svgen.preprocessing``):

- ``video_io``   ``probe``, ``iter_frames``, ``VideoWriter`` / ``write_video`` (ffmpeg, streaming)
- ``landmarks``  dlib 68-point landmarks (+ optional face-alignment) and the video ``FaceTracker``
- ``alignment``  FFHQ quad, the eye-corner video variant, ``warp_quad`` and its inverse
- ``stabilize``  gap filling, segment split and zero-phase low-pass of the crop over time
- ``pipeline``   ``preprocess_videos`` (``svgen preprocess``) and ``align_photo`` (``svgen align-photo``)
- ``parallel``   ``--workers N``: processes over videos and over a long video's chunks
- ``dataset``    the ``aligned.zip`` writer and readers, ``merge_datasets`` (``svgen merge-datasets``)
"""
