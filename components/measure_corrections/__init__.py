"""measure-corrections: what annotators kept, corrected, deleted and added after pre-annotation."""
