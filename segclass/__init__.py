"""segclass: segmentation networks trained from a few pixel masks plus many class labels.

Implements Ciga & Martel, "Learning to segment images with classification labels".
Importing the package has no side effects; submodules import heavy dependencies
(torch, ray, mlflow) only where they are used.
"""

__version__ = "0.1.0"
