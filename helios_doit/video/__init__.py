"""Video: compositions and rendering, probing, stitching and seam reports, all through PyAV."""
