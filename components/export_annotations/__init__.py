"""export-annotations: any CVAT export (archive, folder, gs://, https://, a CVAT server) in;
one validated Dataset out.
"""
