"""cvat-kfp components: one package per pipeline stage, plus the contracts they share."""
