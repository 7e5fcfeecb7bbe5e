"""Pipelines built from the components, their compiled YAML, and the cvat-kfp CLI."""
