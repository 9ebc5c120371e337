"""The guide's steps, model-agnostic: validation set, preprocessing, prep folder, export, evaluation."""
