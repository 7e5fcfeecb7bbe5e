"""Contracts every stage shares: the Dataset artifact, the label map, the validation report."""
