"""One predictor for trained and exported models, used by evaluate, export and preannotate."""
