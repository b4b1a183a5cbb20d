"""Running a trained model over whole images: one room below training and predict.

`regions.py` reads an image band by band at the model's magnification (slides
through OpenSlide, plain images, arrays in memory); `survey.py` finds its
tissue and stain vectors on a thumbnail; `sliding.py` streams the windows on
tissue through the model and stitches their logits into a class mask. The
trainer's evaluation, the data build (tissue of the validation and test
images) and `python -m segclass.predict` all call these, so a model's sweep
metrics and its predicted masks come from the same windows, stitching and
tissue rule. Nothing here imports training, predict, the sweep or analysis.
"""
