"""preannotate: an exported model and a CVAT task in; the model's predictions uploaded as shapes."""
