"""Tests of the image datasets: scikit-learn's digits and CIFAR-10 read from tiny local batches."""

import os
import pickle
import sys

import numpy as np
import pytest

from selfconsume import data

# Tiny CIFAR-10 layout written by the tests: 5 train batches of 4 images, a test batch of 3.
TRAIN_SIZES = (4, 4, 4, 4, 4)
TEST_SIZE = 3


def _pixel(batch, n, c, h, w):
    """The known value of channel c at row h, column w of image n in batch file `batch`."""
    return (31 * batch + 17 * n + 101 * c + 7 * h + 3 * w) % 256


def _batch(batch, m):
    """A batch dict in the exact CIFAR-10 format (channel-major rows, bytes keys)."""
    rows = np.zeros((m, 3072), np.uint8)
    for n in range(m):
        for c in range(3):
            for h in range(32):
                for w in range(32):
                    rows[n, 1024 * c + 32 * h + w] = _pixel(batch, n, c, h, w)
    labels = [(3 * batch + n) % 10 for n in range(m)]
    return {b"batch_label": b"tiny batch", b"labels": labels, b"data": rows,
            b"filenames": [b"img_%d.png" % n for n in range(m)]}


def _write(folder, name, obj, *, protocol=pickle.HIGHEST_PROTOCOL):
    with open(os.path.join(folder, name), "wb") as f:
        if isinstance(obj, bytes):
            f.write(obj)
        else:
            pickle.dump(obj, f, protocol=protocol)


@pytest.fixture
def cifar_dir(tmp_path):
    """A folder holding the six tiny batch files directly."""
    for b, m in enumerate(TRAIN_SIZES):
        _write(tmp_path, f"data_batch_{b + 1}", _batch(b, m))
    _write(tmp_path, "test_batch", _batch(9, TEST_SIZE), protocol=2)  # Python-2 era protocol
    return tmp_path


def _expected(batches):
    """Expected NHWC images and labels, pixel by pixel, for ``[(batch, m), ...]``."""
    x, labels = [], []
    for b, m in batches:
        img = np.zeros((m, 32, 32, 3), np.float64)
        for n in range(m):
            for h in range(32):
                for w in range(32):
                    for c in range(3):
                        img[n, h, w, c] = _pixel(b, n, c, h, w) / 255
        x.append(img)
        labels += [(3 * b + n) % 10 for n in range(m)]
    return np.concatenate(x), np.array(labels)


# ------------------------------------------------------------------------------------------------
# Digits.


def test_load_digits_shapes_dtypes_range_labels():
    ds = data.load_digits()
    assert isinstance(ds, data.Dataset)
    assert ds.x.shape == (1797, 64) and ds.x.dtype == np.float32
    assert ds.labels.shape == (1797,) and ds.labels.dtype == np.int32
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    np.testing.assert_array_equal(ds.x * 16, np.round(ds.x * 16))  # intensities 0..16 over 16
    np.testing.assert_array_equal(np.unique(ds.labels), np.arange(10))
    assert np.all(np.bincount(ds.labels) >= 174)  # 174..183 images per digit
    # the first image is a 0 whose top row is 0 0 5 13 9 1 0 0 (scikit-learn's data[0])
    assert ds.labels[0] == 0
    np.testing.assert_array_equal(ds.x[0, :8] * 16, [0, 0, 5, 13, 9, 1, 0, 0])


def test_load_digits_without_sklearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r'pip install "selfconsume\[experiments\]"'):
        data.load_digits()


def test_image_registry():
    assert data.IMAGE_DATASETS == {"digits": data.load_digits, "cifar10": data.load_cifar10}
    assert "digits" not in data.DATASETS  # DATASETS holds (key, n) generators only
    assert data.CIFAR10_CLASSES[0] == "airplane" and len(data.CIFAR10_CLASSES) == 10


# ------------------------------------------------------------------------------------------------
# CIFAR-10 from local batches.


def test_load_cifar10_train_nhwc_pixel_by_pixel(cifar_dir):
    ds = data.load_cifar10(cifar_dir)
    assert isinstance(ds, data.Dataset)
    assert ds.x.shape == (20, 32, 32, 3) and ds.x.dtype == np.float32
    assert ds.labels.shape == (20,) and ds.labels.dtype == np.int32
    x, labels = _expected(list(enumerate(TRAIN_SIZES)))
    np.testing.assert_allclose(ds.x, x, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(ds.labels, labels)
    # one pixel written out: image 1 of batch 2 (global index 5), row 2, column 3
    assert ds.x[5, 2, 3].tolist() == pytest.approx(
        [_pixel(1, 1, c, 2, 3) / 255 for c in range(3)], abs=1e-7)
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0


def test_load_cifar10_test_split(cifar_dir):
    ds = data.load_cifar10(cifar_dir, split="test")
    x, labels = _expected([(9, TEST_SIZE)])
    assert ds.x.shape == (3, 32, 32, 3)
    np.testing.assert_allclose(ds.x, x, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(ds.labels, labels)


def test_load_cifar10_parent_folder_layout(tmp_path):
    nested = tmp_path / "cifar-10-batches-py"
    nested.mkdir()
    for b, m in enumerate(TRAIN_SIZES):
        _write(nested, f"data_batch_{b + 1}", _batch(b, m))
    _write(nested, "test_batch", _batch(9, TEST_SIZE))
    for path in (tmp_path, str(tmp_path), nested):
        ds = data.load_cifar10(path, split="test")
        np.testing.assert_allclose(ds.x, _expected([(9, TEST_SIZE)])[0], rtol=0, atol=1e-7)
    assert data.load_cifar10(tmp_path).x.shape == (20, 32, 32, 3)


def test_load_cifar10_max_examples_stops_reading(cifar_dir):
    _write(cifar_dir, "data_batch_3", b"not read: max_examples is reached in batch 2")
    ds = data.load_cifar10(cifar_dir, max_examples=6)
    x, labels = _expected([(0, 4), (1, 4)])
    np.testing.assert_allclose(ds.x, x[:6], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(ds.labels, labels[:6])


def test_load_cifar10_legacy_numpy_module_name(cifar_dir):
    # batches pickled before NumPy 2 name numpy.core.multiarray, not numpy._core.multiarray
    raw = pickle.dumps(_batch(9, TEST_SIZE), protocol=2)
    legacy = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert legacy != raw
    _write(cifar_dir, "test_batch", legacy)
    np.testing.assert_array_equal(data.load_cifar10(cifar_dir, split="test").labels, [7, 8, 9])


def test_load_cifar10_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        data.load_cifar10(missing)
    msg = str(err.value)
    assert str(missing) in msg and "data_batch_1" in msg and "cifar-10-batches-py" in msg
    assert "never downloads" in msg


def test_load_cifar10_folder_without_batches(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as err:
        data.load_cifar10(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "data_batch_5" in msg and "extract it" in msg


def test_load_cifar10_missing_batch(cifar_dir):
    os.remove(cifar_dir / "data_batch_3")
    with pytest.raises(FileNotFoundError) as err:
        data.load_cifar10(cifar_dir)
    msg = str(err.value)
    assert str(cifar_dir / "data_batch_3") in msg and "data_batch_1, data_batch_2" in msg
    os.remove(cifar_dir / "test_batch")
    with pytest.raises(FileNotFoundError, match="test_batch"):
        data.load_cifar10(cifar_dir, split="test")


def _good():
    return _batch(1, 4)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"this is not a pickle", r"could not be unpickled"),
        (b"", r"could not be unpickled"),
        (pickle.dumps([1, 2, 3]), r"holds a list, not a dict"),
        (pickle.dumps({"data": 1, "labels": 2}), r"keys \[b'data', b'labels'\] are missing"),
        (pickle.dumps({k: v for k, v in _good().items() if k != b"labels"}),
         r"keys \[b'labels'\] are missing"),
        (pickle.dumps({**_good(), b"data": np.zeros((4, 3000), np.uint8)}),
         r"b'data' has shape \(4, 3000\)"),
        (pickle.dumps({**_good(), b"data": np.zeros((4, 32, 32, 3), np.uint8)}),
         r"b'data' has shape \(4, 32, 32, 3\)"),
        (pickle.dumps({**_good(), b"data": np.zeros((4, 3072), np.float32)}),
         r"dtype float32"),
        (pickle.dumps({**_good(), b"data": b"raw bytes"}), r"b'data' has shape None"),
        (pickle.dumps({**_good(), b"labels": [0, 1, 2]}), r"b'labels' has shape \(3,\)"),
        (pickle.dumps({**_good(), b"labels": [0, 1, 2, 10]}), r"outside 0\.\.9"),
        (pickle.dumps({**_good(), b"labels": [0, -1, 2, 3]}), r"outside 0\.\.9"),
        (pickle.dumps({**_good(), b"labels": [0.5, 1, 2, 3]}), r"dtype float64"),
        (pickle.dumps(print), r"builtins\.print is not allowed"),  # no code runs on load
    ],
    ids=["garbage", "empty", "list", "str-keys", "no-labels", "flat-shape", "nhwc-shape", "float",
         "bytes-data", "label-count", "label-10", "label-neg", "float-labels", "global"],
)
def test_load_cifar10_malformed_batch(cifar_dir, content, match):
    _write(cifar_dir, "data_batch_2", content)
    with pytest.raises(ValueError, match=match) as err:
        data.load_cifar10(cifar_dir)
    msg = str(err.value)
    assert str(cifar_dir / "data_batch_2") in msg and "not a valid CIFAR-10 python batch" in msg
    assert "data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5" in msg


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"split": "valid"}, r"`split` must be one of \['test', 'train'\]; got 'valid'"),
        ({"max_examples": 0}, r"`max_examples` must be >= 1; got 0"),
        ({"max_examples": 2.5}, r"`max_examples` must be an integer >= 1"),
    ],
)
def test_load_cifar10_bad_arguments(cifar_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load_cifar10(cifar_dir, **kwargs)
