import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, jaccard_score

from segclass.metrics import ConfusionMatrix, classification_summary


def _streamed(target, prediction, num_classes, batches=4):
    matrix = ConfusionMatrix(num_classes)
    for t, p in zip(np.array_split(target, batches), np.array_split(prediction, batches)):
        matrix.update(t, p)
    return matrix


@pytest.mark.parametrize("seed", range(5))
def test_against_sklearn_random(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 5, 3000)
    prediction = np.where(rng.random(3000) < 0.6, target, rng.integers(0, 5, 3000))
    matrix = _streamed(target, prediction, 5)
    assert np.array_equal(matrix.counts, confusion_matrix(target, prediction, labels=range(5)))
    assert matrix.macro_f1() == pytest.approx(f1_score(target, prediction, average="macro"))
    assert matrix.paper_micro_f1() == pytest.approx(f1_score(target, prediction, average="weighted"))
    assert matrix.micro_f1() == pytest.approx(f1_score(target, prediction, average="micro"))
    assert matrix.accuracy() == pytest.approx(accuracy_score(target, prediction))
    assert np.allclose(matrix.per_class_f1(), f1_score(target, prediction, average=None, labels=range(5)))
    assert np.allclose(matrix.per_class_iou(), jaccard_score(target, prediction, average=None, labels=range(5)))


def test_classes_absent_from_prediction_or_ground_truth():
    rng = np.random.default_rng(7)
    target = rng.choice([0, 1, 3], 1000)  # class 2 never in ground truth, 4 in neither
    prediction = rng.choice([0, 2, 3], 1000)  # class 1 never predicted
    matrix = _streamed(target, prediction, 5)
    kwargs = dict(zero_division=0)
    assert matrix.macro_f1() == pytest.approx(f1_score(target, prediction, average="macro", **kwargs))
    assert matrix.paper_micro_f1() == pytest.approx(f1_score(target, prediction, average="weighted", **kwargs))
    f1 = matrix.per_class_f1()
    assert f1[1] == 0 and f1[2] == 0 and f1[4] == 0
    assert not matrix.present()[4]


def test_images_as_2d_and_valid_mask():
    target = np.array([[0, 1], [1, 1]])
    prediction = np.array([[0, 1], [0, 1]])
    matrix = ConfusionMatrix(2)
    matrix.update(target, prediction, valid=np.array([[True, True], [False, True]]))
    assert matrix.counts.tolist() == [[1, 0], [0, 2]]
    assert matrix.accuracy() == 1.0


def test_out_of_range_label_is_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(2).update(np.array([2]), np.array([0]))
    with pytest.raises(ValueError, match="num_classes"):  # would wrap around in the small index type
        ConfusionMatrix(16).update(np.array([-1]), np.array([0]))


def test_summary_names_and_classification_summary():
    matrix = _streamed(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3, batches=2)
    summary = matrix.summary(["a", "b", "c"], prefix="test_")
    assert {"test_macro_f1", "test_paper_micro_f1", "test_micro_f1", "test_pixel_accuracy",
            "test_f1_b", "test_iou_c", "test_confusion_matrix"} <= set(summary)
    result = classification_summary(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)
    assert result["cls_accuracy"] == pytest.approx(2 / 3)
    assert result["cls_confusion_matrix"] == [[1, 0], [1, 1]]


@pytest.mark.parametrize("num_classes", [4, 12, 200])  # uint8, uint16 and int64 pair indices
def test_pixel_scores_count_all_pixels_and_tissue_pixels(num_classes):
    from segclass.metrics import PixelScores

    rng = np.random.default_rng(num_classes)
    target, prediction = rng.integers(0, num_classes, (2, 60, 70)).astype(np.uint8 if num_classes < 256 else int)
    tissue = rng.random((60, 70)) < 0.4
    scores = PixelScores(num_classes)
    scores.update(target, prediction, tissue)
    labels = range(num_classes)
    assert np.array_equal(scores.all_pixels.counts, confusion_matrix(target.ravel(), prediction.ravel(), labels=labels))
    assert np.array_equal(scores.tissue.counts, confusion_matrix(target[tissue], prediction[tissue], labels=labels))
