"""export-model: a trained Model in; a SavedModel (and TFLite), label maps and a model card out."""
