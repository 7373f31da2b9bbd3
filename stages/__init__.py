"""The pipeline's stages, in dvc.yaml order: prepare, filter, tokenize, train, evaluate (and base_model)."""
