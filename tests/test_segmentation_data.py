"""Readers of the segmentation folder layout, their bad-input errors, the synthetic corpus."""

import json

import numpy as np
import pandas as pd
import pytest

from neds_hf.segmentation.readers import (
    SegmentationDataError,
    load_session,
    load_sessions,
    read_feature_csv,
    read_label_csv,
    read_marker_csv,
)
from neds_hf.segmentation.synthetic import (
    make_synthetic_corpus,
    render_markers,
    sample_bouts,
    sparse_labels,
    write_label_csv,
)

CLASSES = ["background", "still", "walk"]


def write_markers(path, values, likelihood=None, markers=("a", "b")):
    """DLC CSV from values `(T, M, 2)`."""
    columns, data = [], []
    for m, name in enumerate(markers):
        lik = np.ones(len(values)) if likelihood is None else likelihood[:, m]
        for coord, column in (("x", values[:, m, 0]), ("y", values[:, m, 1]), ("likelihood", lik)):
            columns.append(("dlc", name, coord))
            data.append(column)
    frame = pd.DataFrame(np.stack(data, 1), columns=pd.MultiIndex.from_tuples(columns))
    frame.to_csv(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg") / "corpus"
    make_synthetic_corpus(root, num_train_sessions=2, num_test_sessions=1, num_frames=600)
    return root


def test_marker_csv_positions_names_and_interpolation(tmp_path):
    values = np.arange(24, dtype=float).reshape(6, 2, 2)
    values[2:4, 0, 0] = np.nan  # a NaN run of 2 frames in a_x
    likelihood = np.ones((6, 2))
    likelihood[1, 1] = 0.1  # one low-likelihood frame of marker b
    write_markers(tmp_path / "s.csv", values, likelihood)
    positions, names, report = read_marker_csv(tmp_path / "s.csv", likelihood_threshold=0.5)
    assert names == ["a_x", "a_y", "b_x", "b_y"] and positions.shape == (6, 4)
    np.testing.assert_allclose(positions[:, 0], [0, 4, 8, 12, 16, 20])  # linear fill
    np.testing.assert_allclose(positions[1, 2:], [(2 + 10) / 2, (3 + 11) / 2])
    assert report == {"interpolated_values": 4, "low_likelihood_frames": 1}
    kept, _, report = read_marker_csv(tmp_path / "s.csv")
    assert kept[1, 2] == values[1, 1, 0] and report["low_likelihood_frames"] == 0


def test_marker_csv_with_wrong_header_depth_names_the_file(tmp_path):
    path = tmp_path / "flat.csv"
    pd.DataFrame({"a_x": [1.0, 2.0], "a_y": [1.0, 2.0]}).to_csv(path)
    with pytest.raises(SegmentationDataError, match=r"flat\.csv: expected 3 header rows"):
        read_marker_csv(path)
    deep = tmp_path / "multi_animal.csv"
    columns = pd.MultiIndex.from_tuples([("dlc", "mouse1", "a", "x"), ("dlc", "mouse1", "a", "y")])
    pd.DataFrame([[1.0, 2.0]], columns=columns).to_csv(deep)
    with pytest.raises(SegmentationDataError, match=r"multi_animal\.csv: expected 3 header"):
        read_marker_csv(deep)


def test_missing_markers_and_all_nan_markers_are_errors(tmp_path):
    values = np.zeros((4, 2, 2))
    write_markers(tmp_path / "s.csv", values)
    with pytest.raises(SegmentationDataError, match=r"s\.csv: markers \['nose'\] are missing"):
        read_marker_csv(tmp_path / "s.csv", markers=["a", "nose"])
    values[:, 1, 1] = np.nan
    write_markers(tmp_path / "n.csv", values)
    with pytest.raises(SegmentationDataError, match=r"n\.csv: column 'b_y' has no valid value"):
        read_marker_csv(tmp_path / "n.csv")


def test_label_csv_errors(tmp_path):
    path = tmp_path / "labels.csv"
    pd.DataFrame([[1, 0, 0], [0, 1, 1]], columns=CLASSES).to_csv(path)
    with pytest.raises(SegmentationDataError, match=r"labels\.csv: 1 frames have several"):
        read_label_csv(path)
    pd.DataFrame([[1, 0, 0]], columns=["background", "still", "jump"]).to_csv(path)
    with pytest.raises(SegmentationDataError, match=r"classes \['jump'\] are not classes"):
        read_label_csv(path, class_names=CLASSES)
    path.write_text("")
    with pytest.raises(SegmentationDataError, match=r"labels\.csv: the labels file is empty"):
        read_label_csv(path)
    pd.DataFrame([[0, 1]], columns=["still", "walk"]).to_csv(path)
    with pytest.raises(SegmentationDataError, match="first label column must be 'background'"):
        read_label_csv(path)


def test_labels_follow_the_model_class_order(tmp_path):
    path = tmp_path / "labels.csv"
    pd.DataFrame([[0, 1, 0], [0, 0, 1]], columns=["background", "walk", "still"]).to_csv(path)
    labels, names = read_label_csv(path, class_names=CLASSES)
    assert names == CLASSES and labels.tolist() == [2, 1]


def test_label_and_marker_frame_counts_must_match(tmp_path):
    (tmp_path / "markers").mkdir()
    (tmp_path / "labels").mkdir()
    write_markers(tmp_path / "markers" / "s1.csv", np.zeros((5, 2, 2)))
    write_label_csv(tmp_path / "labels" / "s1.csv", np.zeros(4, dtype=int), CLASSES)
    with pytest.raises(SegmentationDataError, match=r"s1\.csv: 4 label rows but .* 5 frames"):
        load_session(tmp_path, "s1")


def test_feature_csv_interpolates_and_reports(tmp_path):
    path = tmp_path / "f.csv"
    pd.DataFrame({"speed": [0.0, np.nan, 2.0], "angle": [1.0, 1.0, 1.0]}).to_csv(path)
    values, names, report = read_feature_csv(path)
    assert names == ["speed", "angle"] and values[1, 0] == 1.0
    assert report["interpolated_values"] == 1


def test_synthetic_corpus_layout_and_known_segments(corpus):
    split = json.loads((corpus / "split.json").read_text())
    assert split["train"] == ["train_00", "train_01"] and split["test"] == ["test_00"]
    sessions = load_sessions(corpus)
    truth = load_sessions(corpus, labels_dir="labels-true")
    for session, true in zip(sessions, truth, strict=True):
        assert session.features.shape == (600, 8) and session.class_names[0] == "background"
        labelled = session.labels > 0
        # given labels always agree with the truth; test sessions are fully labelled
        assert np.array_equal(session.labels[labelled], true.labels[labelled])
        assert labelled.all() == session.session_id.startswith("test")
        assert (true.labels > 0).all()


def test_synthetic_classes_have_distinct_kinematics():
    rng = np.random.default_rng(0)
    labels = sample_bouts(6000, rng)
    positions, _ = render_markers(labels, rng)
    paw_speed = np.abs(np.diff(positions[:, 0, 0], prepend=positions[0, 0, 0]))
    nose_height = positions[:, 2, 1]
    median = {c: np.median(paw_speed[labels == c]) for c in range(1, 5)}
    assert median[2] > 2 * median[1]  # walking paws move, still paws do not
    assert np.median(nose_height[labels == 4]) > np.median(nose_height[labels == 1]) + 10
    lengths = np.diff(np.flatnonzero(np.diff(np.r_[-1, labels, -1])))
    assert lengths[:-1].min() >= 20 and 40 < np.median(lengths) < 200  # last bout is cut


def test_sparse_labels_are_50_frame_stretches_of_true_bouts():
    rng = np.random.default_rng(1)
    labels = sample_bouts(5000, rng)
    sparse = sparse_labels(labels, 0.04, rng)
    kept = sparse > 0
    assert kept.sum() == 4 * 50 and np.array_equal(sparse[kept], labels[kept])
    assert len(set(sparse[kept].tolist())) == 4  # every class gets a labelled stretch
