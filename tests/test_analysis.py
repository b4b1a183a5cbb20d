"""Analysis CLIs on a real MLflow store whose runs' final metrics the test knows."""

import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mlflow.entities import Param

from segclass.analysis.paper import paper_results, paper_table1
from segclass.grid import GridPoint
from segclass.ray_sweep.artifacts import _png
from segclass.ray_sweep.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["normal", "benign", "in_situ", "invasive"]

# (mode, s, seed) -> (macro F1, paper-micro F1)
SEGMENTATION = {("S", 0.05, 1): (0.50, 0.90), ("S", 0.05, 2): (0.60, 0.80), ("S", 1.0, 1): (0.80, 0.95),
                ("S", 1.0, 2): (0.80, 0.85), ("S+C", 0.05, 1): (0.70, 0.92), ("S+C", 0.05, 2): (0.64, 0.90)}
# S+C at s = 100% seed 1 only; S at s = 10% seed 1 only and no S+C there.
SEGMENTATION[("S+C", 1.0, 1)] = (0.78, 0.94)
SEGMENTATION[("S", 0.10, 1)] = (0.60, 0.90)
CLASSIFICATION = {("S2+C2", 0.5, 1): 0.80, ("S2+C2", 0.5, 2): 0.70, ("S2+C2", 0.1, 1): 0.40, ("S2+C2", 0.1, 2): 0.50,
                  ("S2*+C2", 0.1, 1): 0.30}


def _identity(point, **settings):
    from segclass.config import TrainConfig
    from segclass.schema import TrialIdentity

    config = point.train_config(epochs=settings.pop("epochs", 5)).to_dict()
    return TrialIdentity.of(point, {**config, **settings}, "", "fingerprint")


def _finish(tracker, identity, report, files, folder):
    """What a trial leaves in its final/ folder, logged as the sweep's writer does."""
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(report))
    for name, payload in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(payload)
    tracker.finish(identity.digest, folder)


def log_runs(results, segmentation, classification, unfinished=True, **settings):
    tracker = Tracker(f"sqlite:///{results / 'mlflow.db'}", artifact_root=results / "mlartifacts", sweep="t")
    truth = np.zeros((32, 32), np.uint8)
    truth[8:24, 8:24] = 3
    image = np.full((32, 32, 3), 245, np.uint8)  # glass, with a square of pink tissue under the lesion
    image[4:28, 4:28] = (200, 80, 150)
    for (mode, s, seed), (macro, micro) in segmentation.items():
        identity = _identity(GridPoint("segmentation", "synthetic", mode, s, seed), **settings)
        tracker.start(identity, identity.params(), 0)
        tracker.log_epochs(identity.digest, [(1, {"val_macro_f1": macro})])
        prediction = truth.copy()
        prediction[:4] = 1 if mode == "S" else 0
        report = {"class_names": NAMES, "test_macro_f1": macro, "test_paper_micro_f1": micro,
                  "n_seg_patches": int(s * 615)}
        _finish(tracker, identity, report, {"masks/slide_pred.png": _png(prediction, len(NAMES)),
                                            "masks/slide_truth.png": _png(truth, len(NAMES)),
                                            "masks/slide_image.png": _png(image)},
                results / "final" / identity.digest)
    for (mode, c, seed), accuracy in classification.items():
        identity = _identity(GridPoint("classification", "synthetic", mode, c, seed), **settings)
        tracker.start(identity, identity.params(), 0)
        matrix = [[5, 1, 0, 0], [1, 4, 0, 1], [0, 0, 6, 0], [0, 1, 1, 4]]
        _finish(tracker, identity, {"class_names": NAMES, "holdout_cls_accuracy": accuracy},
                {"holdout_cls_confusion_matrix.json": json.dumps({"class_names": NAMES, "matrix": matrix}).encode()},
                results / "final" / identity.digest)
    if unfinished:  # still running: must be ignored
        identity = _identity(GridPoint("segmentation", "synthetic", "S+C*", 0.05, 1), **settings)
        tracker.start(identity, identity.params(), 0)
    return tracker


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    log_runs(results, SEGMENTATION, CLASSIFICATION)
    return results


@pytest.fixture(scope="module")
def report_dir(store):
    result = subprocess.run([sys.executable, str(ROOT / "analysis" / "report.py"), "--results", str(store),
                             "--seeds", "2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "index.md" in result.stdout
    return store / "analysis"


def test_segmentation_table_exact_means_stds_counts_and_missing(report_dir):
    table = pd.read_csv(report_dir / "tables" / "table_d5_segmentation.csv", dtype=str)
    row = lambda mode, metric: table[(table["mode"] == mode) & (table["metric"] == metric)].iloc[0]  # noqa: E731
    assert row("S", "macro_f1")["5"] == "55.0 ± 5.0"
    assert row("S", "paper_micro_f1")["5"] == "85.0 ± 5.0"
    assert row("S", "macro_f1")["100"] == "80.0 ± 0.0"
    assert row("S+C", "macro_f1")["5"] == "67.0 ± 3.0"
    assert row("S+C", "macro_f1")["100"] == "78.0 (n=1)"
    assert row("S", "macro_f1")["10"] == "60.0 (n=1)"
    assert row("S+C", "macro_f1")["10"] == "–"
    assert list(table.columns[-3:]) == ["5", "10", "100"]  # only s values that some run has
    assert "S+C*" not in set(table["mode"])  # unfinished runs are not results
    summary = pd.read_csv(report_dir / "tables" / "segmentation_summary.csv")
    s5 = summary[(summary["mode"] == "S") & (summary["metric"] == "macro_f1") & (summary["x"] == 5)].iloc[0]
    assert s5["mean"] == pytest.approx(55.0) and s5["std"] == pytest.approx(5.0) and s5["n"] == 2
    for suffix in (".md", ".tex"):
        assert "55.0" in (report_dir / "tables" / f"table_d5_segmentation{suffix}").read_text()


def test_runs_parquet_has_one_row_per_finished_run_with_params_identity_and_final_metrics(report_dir):
    runs = pd.read_parquet(report_dir / "tables" / "runs.parquet")
    assert len(runs) == len(SEGMENTATION) + len(CLASSIFICATION)  # the unfinished S+C* run is not a row
    segmentation = runs[runs["study"] == "segmentation"]
    macro = {(mode, x, seed): value for mode, x, seed, value  # named as MLflow names them
             in segmentation[["mode", "swept_percent", "seed", "final_test_macro_f1"]].itertuples(index=False)}
    assert macro == pytest.approx({(mode, round(s * 100, 4), seed): values[0]
                                   for (mode, s, seed), values in SEGMENTATION.items()})
    assert runs["identity"].str.len().eq(16).all() and runs["identity"].is_unique
    assert set(runs["param_epochs"]) == {"5"} and list(runs["param_mode"]) == list(runs["mode"])
    assert len(pd.read_csv(report_dir / "tables" / "runs.csv")) == len(runs)
    index = (report_dir / "index.md").read_text()
    assert "(tables/runs.parquet)" in index and "(tables/runs.csv)" in index


def test_annotation_budget_reads_off_the_smallest_s_per_target_with_seed_spread(report_dir):
    table = pd.read_csv(report_dir / "tables" / "annotation_budget.csv", dtype=str)
    row = lambda mode, metric, target: table[(table["mode"] == mode) & (table["metric"] == metric)  # noqa: E731
                                             & (table["target"] == f"{target}% of S at 100%")].iloc[0]
    # S's paper-micro F1 (reference 90.0): mean 85 at s = 5 reaches 90% (81); seed 2 (80) needs s = 100
    assert row("S", "paper_micro_f1", 90)[["s (%)", "masks", "s per seed (%)", "seeds reaching"]].tolist() == \
        ["5", "30", "5–100", "2 of 2"]
    # 95% (85.5): the mean needs s = 10; seed 2 never gets there (85 at s = 100)
    assert row("S", "paper_micro_f1", 95)[["s (%)", "masks", "s per seed (%)", "seeds reaching"]].tolist() == \
        ["10", "61", "5–5", "1 of 2"]
    # S+C's macro F1 (reference 80.0): 67 at s = 5, 78 at s = 100 (seed 1 only)
    assert row("S+C", "macro_f1", 95)[["s (%)", "s per seed (%)", "seeds reaching"]].tolist() == \
        ["100", "100–100", "1 of 2"]
    assert row("S+C", "macro_f1", 90)["variant"] == "paper" and row("S", "macro_f1", 90)["variant"] == "–"
    assert "Annotation budget" in (report_dir / "index.md").read_text()


def test_share_of_full_masks_at_five_percent_with_seed_range(report_dir):
    table = pd.read_csv(report_dir / "tables" / "share_of_full_masks.csv", dtype=str).set_index("mode")
    # S at s = 5: 50 and 60 against S at 100% = 80; S+C: 64 and 70
    assert table.loc["S", ["share of S at 100%", "seed range", "reaches 95%"]].tolist() == ["69%", "62%–75%", "no"]
    assert table.loc["S+C", ["share of S at 100%", "seed range", "seeds"]].tolist() == ["84%", "80%–87%", "2"]  # 70 / 80 = 0.87499...: rounds down
    assert "How close to full masks" in (report_dir / "index.md").read_text()


def test_classification_table_and_confusion(report_dir):
    table = pd.read_csv(report_dir / "tables" / "table_d4_classification.csv", dtype=str).set_index("mode")
    assert table.loc["S2+C2", "50"] == "75.0 ± 5.0" and table.loc["S2+C2", "10"] == "45.0 ± 5.0"
    assert table.loc["S2*+C2", "10"] == "30.0 (n=1)" and table.loc["S2*+C2", "50"] == "–"
    rows = json.loads((report_dir / "tables" / "table1_confusion.json").read_text())
    assert rows[0]["matrix"][0] == [10, 2, 0, 0] and rows[0]["accuracy"] == pytest.approx(75.0)


def test_normalization_is_exactly_one_at_the_reference():
    from segclass.analysis.curves import normalize
    from segclass.analysis.tables import SEG_METRICS, summarize

    runs = pd.DataFrame([{"dataset": "d", "variant": "paper", "budget": "paper", "mode": m, "x": s * 100,
                          "seed": seed, "test_macro_f1": v[0], "test_paper_micro_f1": v[1]}
                         for (m, s, seed), v in SEGMENTATION.items()])
    normalized = normalize(summarize(runs, SEG_METRICS), "S", 100.0)
    reference = normalized[(normalized["mode"] == "S") & (normalized["x"] == 100) & (normalized["metric"] == "macro_f1")]
    assert reference["rel_mean"].iloc[0] == 1.0
    s_plus_c = normalized[(normalized["mode"] == "S+C") & (normalized["x"] == 5) & (normalized["metric"] == "macro_f1")]
    assert s_plus_c["rel_mean"].iloc[0] == pytest.approx(67.0 / 80.0)


def test_figures_are_valid_png_and_svg_with_expected_panels(report_dir):
    figures = report_dir / "figures"
    fig5 = figures / "fig5_synthetic_paper_paper"
    with Image.open(fig5.with_suffix(".png")) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]
    svg = ElementTree.parse(fig5.with_suffix(".svg")).getroot()
    axes = [g for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("id", "").startswith("axes_")]
    assert len(axes) == 2  # macro F1 and paper-micro F1
    assert (figures / "fig6_synthetic_paper_paper.png").is_file()
    with Image.open(figures / "samples_synthetic_paper_paper.png") as image:
        assert image.format == "PNG"
    samples = (figures / "samples_synthetic_paper_paper.svg").read_text()  # the H&E, the truth over it, a legend
    assert "H&amp;E: test image slide" in samples and "ground truth" in samples and "glass (no tissue)" in samples
    assert "macro F1" in samples
    index = (report_dir / "index.md").read_text()
    assert "fig5_synthetic_paper_paper.png" in index and "table_d5_segmentation" in index
    comparison = figures / "comparison_synthetic_paper.svg"  # every arm in raw values: the first figure
    assert index.index("comparison_synthetic_paper.png") < index.index("fig5_synthetic_paper_paper.png")
    svg_text = comparison.read_text()  # matplotlib writes each text as a comment above its glyphs
    assert "S+C (paper head)" in svg_text and "test macro F1 (%)" in svg_text


def test_logged_masks_keep_class_ids_and_show_class_colours():
    from segclass.palette import class_colours

    mask = np.arange(16, dtype=np.uint8).reshape(4, 4) % len(NAMES)
    image = Image.open(io.BytesIO(_png(mask, len(NAMES))))
    assert image.mode == "P" and np.array_equal(np.asarray(image), mask)  # what the report reads back
    assert np.array_equal(np.asarray(image.convert("RGB")), class_colours(len(NAMES))[mask])  # what a viewer shows


def test_paper_numbers_transcribed():
    paper = paper_results()
    cell = lambda t, d, m, metric, x: paper[(paper["table"] == t) & (paper["dataset"] == d) & (paper["mode"] == m)  # noqa: E731
                                            & (paper["metric"] == metric) & (paper["x"] == x)].iloc[0]
    checks = [  # (table, dataset, mode, metric, x, mean, std) read off the paper's text
        ("D.4", "bach", "S2+C2", "accuracy", 0, 20.0, 7.9), ("D.4", "bach", "S2+C2", "accuracy", 50, 80.0, 2.6),
        ("D.4", "gleason2019", "S2+C2*", "accuracy", 2.5, 65.0, 1.1),
        ("D.4", "digestpath2019", "S2*+C2", "accuracy", 0, 49.1, 9.2),
        ("D.4", "digestpath2019", "S2+C2", "accuracy", 40, 77.6, 2.9),
        ("D.5", "bach", "S", "paper_micro_f1", 0, 26.4, 6.1), ("D.5", "bach", "S", "macro_f1", 100, 80.8, 0.6),
        ("D.5", "bach", "S+C", "paper_micro_f1", 0, 39.5, 2.6), ("D.5", "bach", "S+C*", "macro_f1", 7.5, 76.7, 2.0),
        ("D.5", "gleason2019", "S", "macro_f1", 20, 21.5, 2.3),
        ("D.5", "digestpath2019", "S", "paper_micro_f1", 100, 39.5, 1.1),
        ("D.5", "digestpath2019", "S+C*", "macro_f1", 30, 23.3, 0.3),
    ]
    for table, dataset, mode, metric, x, mean, std in checks:
        row = cell(table, dataset, mode, metric, x)
        assert (row["mean"], row["std"]) == (mean, std), (table, dataset, mode, metric, x)
    assert len(paper) == 3 * 3 * 12 + 3 * 6 * 14
    table1 = paper_table1()
    assert table1.set_index("dataset").loc["bach", "matrix"][2] == [6, 5, 46, 1]
    assert table1.set_index("dataset").loc["digestpath2019", "accuracy"] == 82


def test_empty_store_renders_without_crashing(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "analysis" / "report.py"), "--results", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "0 runs" in result.stdout


def test_cli_help():
    for script in ("report.py", "tables.py", "curves.py"):
        text = subprocess.run([sys.executable, str(ROOT / "analysis" / script), "--help"], capture_output=True,
                              text=True, check=True).stdout
        assert "--mlflow-uri" in text and "--with-paper" in text


def test_default_view_and_variant_comparison(tmp_path):
    from segclass.analysis.tables import SEG_METRICS, comparison_table, default_view, summarize

    runs = pd.DataFrame([
        {"dataset": "d", "variant": v, "budget": b, "mode": "S+C", "x": 5.0, "seed": seed,
         "test_macro_f1": value, "test_paper_micro_f1": value}
        for v, b, seed, value in (("paper", "paper", 1, 0.4), ("paper", "paper", 2, 0.6),
                                  ("released-code", "paper", 1, 0.7), ("paper", "equal", 1, 0.5))])
    summary = summarize(runs, SEG_METRICS)
    assert set(default_view(summary)["variant"]) == {"paper"} and set(default_view(summary)["budget"]) == {"paper"}
    equal_only = summary[summary["budget"] == "equal"]  # a sweep of the equal budget only (the quick preset)
    assert set(default_view(equal_only)["budget"]) == {"equal"} and len(default_view(equal_only))
    table = comparison_table(summary, planned_seeds=2)
    row = table[table["metric"] == "macro_f1"].iloc[0]
    assert list(table.columns[4:]) == ["paper / paper", "paper / equal", "released-code / paper"]
    assert row["paper / paper"] == "50.0 ± 10.0"
    assert row["released-code / paper"] == "70.0 (n=1)"
    assert row["s (%)"] == "5"


def test_runs_of_different_settings_never_share_a_cell(tmp_path):
    from segclass.analysis.runs import load_runs
    from segclass.errors import TrackingStoreError

    log_runs(tmp_path, {("S", 0.05, 1): (0.5, 0.9)}, {}, unfinished=False, epochs=1)
    log_runs(tmp_path, {("S", 0.05, 1): (0.7, 0.9)}, {}, unfinished=False, epochs=100)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(TrackingStoreError, match="2 different settings.*differ in epochs.*--settings") as error:
        load_runs(uri)
    assert "epochs=1" in str(error.value) and "epochs=100" in str(error.value)
    assert list(load_runs(uri, epochs=100)["test_macro_f1"]) == [0.7]
    settings = str(error.value).split("--settings ")[2][:8]
    assert len(load_runs(uri, settings=settings)) == 1
    from segclass.errors import ConfigError

    with pytest.raises(ConfigError, match=r"matches --sweep nosuch; it holds sweeps .* on datasets synthetic"):
        load_runs(uri, sweep="nosuch")  # a typo in a filter is an error, not an empty report
    with pytest.raises(ConfigError, match=r"has no experiment segclass-nosuch; it holds segclass-"):
        load_runs(uri, experiment="segclass-nosuch")


def test_an_identity_trained_twice_counts_once(tmp_path):
    from mlflow import MlflowClient

    from segclass.analysis.runs import load_runs
    from segclass.schema import IDENTITY_TAG

    tracker = log_runs(tmp_path, {("S", 0.05, 1): (0.5, 0.9)}, {}, unfinished=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    first = client.search_runs([tracker.experiment_id(_identity(GridPoint("segmentation", "synthetic", "S", 0.05, 1)))])[0]
    # a second sweep that trained the same identity at the same time finished it later
    twin = client.create_run(first.info.experiment_id, tags=first.data.tags)
    client.log_batch(twin.info.run_id, params=[Param(k, v) for k, v in first.data.params.items()])
    client.log_metric(twin.info.run_id, "final_test_macro_f1", 0.7)
    client.set_terminated(twin.info.run_id)
    assert {r.data.tags[IDENTITY_TAG] for r in client.search_runs([first.info.experiment_id])} == {
        first.data.tags[IDENTITY_TAG]}
    runs = load_runs(uri)
    assert len(runs) == 1 and list(runs["test_macro_f1"]) == [0.5]  # the first to finish


def test_the_init_is_named_in_the_index_captions_and_figures(report_dir, tmp_path):
    import matplotlib

    from segclass.analysis.curves import normalize, plot_curves
    from segclass.analysis.tables import SEG_METRICS, summarize

    random_init = "init: random (not the paper's ImageNet)"
    assert f"Encoder {random_init}; training precision " in (report_dir / "index.md").read_text()
    for table in ("table_d5_segmentation.md", "table_d4_classification_all.md", "table1_confusion.md"):
        assert random_init in (report_dir / "tables" / table).read_text(), table
    runs = pd.DataFrame([{"dataset": "d", "variant": "paper", "budget": "paper", "mode": m, "x": s * 100,
                          "seed": seed, "test_macro_f1": v[0], "test_paper_micro_f1": v[1]}
                         for (m, s, seed), v in SEGMENTATION.items()])
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # titles as text, to read them back
        paths = plot_curves(normalize(summarize(runs, SEG_METRICS), "S", 100.0), ["macro_f1"], "Fig. 5", "s",
                            tmp_path / "fig5", inits={"d": "ImageNet (torchvision IMAGENET1K_V1, as the paper)"})
    svg = next(p for p in paths if p.suffix == ".svg").read_text()
    assert "init: ImageNet (torchvision IMAGENET1K_V1, as the paper)" in svg


def test_init_labels():
    from segclass.analysis.runs import init_label, init_text
    from segclass.schema import IMAGENET_INIT, RANDOM_INIT

    assert init_label(IMAGENET_INIT) == "ImageNet (torchvision IMAGENET1K_V1, as the paper)"
    assert init_label(RANDOM_INIT) == init_label("") == "random (not the paper's ImageNet)"
    assert init_label("resnet18.pth") == "weights file resnet18.pth"
    assert init_text({"bach": "x", "gleason2019": "x"}) == "init: x"
    assert init_text({"gleason2019": "y", "bach": "x"}) == "init: bach: x; gleason2019: y"
    assert init_text({}) == ""


def test_s_filters_as_a_number_in_mlflow(store):
    """Params are strings in MLflow; s is also a metric, so `<` compares numbers (5 < 10 < 100)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("segclass-segmentation-synthetic")
    found = client.search_runs([experiment.experiment_id], "metrics.seg_percent < 10 and attributes.status = 'FINISHED'")
    assert sorted(float(run.data.params["seg_percent"]) for run in found) == [5.0] * 4
    assert "metrics.seg_percent" in experiment.tags.get("mlflow.note.content", "")


def test_comparison_figure_draws_the_image_matched_s_beside_the_equal_steps_arms(tmp_path):
    import matplotlib

    from segclass.analysis.curves import MATCHED_LABEL, plot_arms

    rows = [{"dataset": "synthetic", "budget": budget, "mode": mode, "variant": variant, "metric": "macro_f1", "x": x,
             "mean": mean, "std": 2.0, "n": 2}
            for budget, mode, variant, x, mean in (("equal", "S", "paper", 5.0, 50.0), ("equal", "S", "paper", 100.0, 75.0),
                                                   ("equal", "S+C", "mean-softmax", 5.0, 60.0),
                                                   ("equal-images", "S", "paper", 5.0, 55.0),
                                                   ("equal-images", "S", "paper", 100.0, 77.0))]
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text in the SVG
        paths = plot_arms(pd.DataFrame(rows), ["macro_f1"], "s (%)", tmp_path / "comparison")
    assert sorted(p.name for p in paths) == ["comparison_synthetic_equal.png", "comparison_synthetic_equal.svg"]
    svg = (tmp_path / "comparison_synthetic_equal.svg").read_text()
    assert MATCHED_LABEL in svg and "S+C (mean-softmax head)" in svg
