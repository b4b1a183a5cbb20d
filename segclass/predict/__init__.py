"""Prediction on new slides and images with a trained model (`python -m segclass.predict`)."""

from segclass.predict.run import PredictOptions, predict_image, predict_many

__all__ = ["PredictOptions", "predict_image", "predict_many"]
