"""Video: compositions and rendering, probing, stitching and seam reports, all through PyAV."""

#: Outputs with these suffixes are probed before a chunk or merge counts as done.
VIDEO_SUFFIXES = frozenset({".mov", ".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mxf"})


def is_video_path(path: str) -> bool:
    """Decided by name alone, so that non-video jobs never import PyAV."""
    dot = path.rfind(".")
    return dot >= 0 and path[dot:].lower() in VIDEO_SUFFIXES
