"""Video: compositions and rendering, probing, stitching and seam reports, all through PyAV."""
from __future__ import annotations

import os

#: Encoder threads of a render (`helios-doit render`): unset, libav decides; a runner running
#: chunks side by side sets it to the cores each of them gets.
THREADS_ENV = "HELIOS_DOIT_THREADS"

#: Outputs with these suffixes are probed before a chunk or merge counts as done.
VIDEO_SUFFIXES = frozenset({".mov", ".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mxf"})


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """Decided by name alone, so that non-video jobs never import PyAV."""
    return os.path.splitext(path)[1].lower() in VIDEO_SUFFIXES
