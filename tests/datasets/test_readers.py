"""Every reader on a tiny copy of its release layout: labels 0-based, class names in label order, splits,
auto-detection, one-line errors for missing annotation files, unreadable images reported as None."""
import os

import numpy as np
import pytest
import scipy.io as sio
from typer.testing import CliRunner

from fgvc_edge.cli import app
from fgvc_edge.datasets import detect_layout, load_dataset, open_image
from fgvc_edge.errors import UserInputError


def _touch_images(paths):
    for path in paths:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()


def _structs(**columns):
    n = len(next(iter(columns.values())))
    array = np.zeros(n, dtype=[(name, "O") for name in columns])
    for name, values in columns.items():
        array[name] = values
    return array


def test_cub_reads_split_labels_and_names_from_the_parent_folder(tmp_path, tiny):
    names = tiny.write_cub(str(tmp_path / "CUB_200_2011"), classes=3, train_per_class=2, test_per_class=1, size=16)
    data = load_dataset(str(tmp_path))  # the folder the archive unpacks into, one level up
    assert data.layout == "cub" and data.root == str(tmp_path / "CUB_200_2011")
    assert data.class_names == names == ["Bird_0", "Bird_1", "Bird_2"]
    assert len(data.train) == 6 and len(data.test) == 3
    assert sorted(label for _, label in data.test) == [0, 1, 2]
    path, label = data.train[2]
    assert label == 1 and path.endswith(os.path.join("images", "002.Bird_1", "Bird_1_0000.jpg")) and os.path.isfile(path)


def test_missing_cub_annotation_file_is_one_line_error(tmp_path, tiny):
    tiny.write_cub(str(tmp_path), classes=2, train_per_class=1, test_per_class=1, size=16)
    os.remove(tmp_path / "train_test_split.txt")
    with pytest.raises(UserInputError, match="missing train_test_split.txt") as info:
        load_dataset(str(tmp_path), "cub")
    assert "\n" not in str(info.value)


def test_cli_reports_missing_annotation_in_one_line_and_exit_2(tmp_path, tiny):
    tiny.write_cub(str(tmp_path), classes=2, train_per_class=1, test_per_class=1, size=16)
    os.remove(tmp_path / "classes.txt")
    result = CliRunner().invoke(app, ["train", "resnet18", "--data", str(tmp_path), "--dataset", "cub"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: CUB-200-2011 data set at {}: missing classes.txt".format(tmp_path)]


def test_imagefolder_sorted_classes_and_val_fallback(tmp_path, tiny):
    tiny.write_imagefolder(str(tmp_path), classes=3, train_per_class=2, test_per_class=1, size=16)
    os.rename(tmp_path / "test", tmp_path / "val")
    data = load_dataset(str(tmp_path))
    assert data.layout == "imagefolder" and data.class_names == ["class_a", "class_b", "class_c"]
    assert [label for _, label in data.test] == [0, 1, 2] and len(data.train) == 6


def test_imagefolder_test_class_unknown_to_train_is_refused(tmp_path, tiny):
    tiny.write_imagefolder(str(tmp_path), classes=2, train_per_class=1, test_per_class=1, size=16)
    os.makedirs(tmp_path / "test" / "zebra")
    with pytest.raises(UserInputError, match="zebra"):
        load_dataset(str(tmp_path))


def test_stanford_cars_devkit_layout(tmp_path):
    os.makedirs(tmp_path / "devkit")
    sio.savemat(tmp_path / "devkit" / "cars_meta.mat",
                {"class_names": np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object)})
    sio.savemat(tmp_path / "devkit" / "cars_train_annos.mat",
                {"annotations": _structs(bbox_x1=[1, 2], **{"class": [2, 1]}, fname=["00001.jpg", "00002.jpg"])})
    # A one-image split: scipy squeezes it to a scalar, which must still read as a list.
    sio.savemat(tmp_path / "cars_test_annos_withlabels.mat", {"annotations": _structs(**{"class": [1]}, fname=["00001.jpg"])})
    data = load_dataset(str(tmp_path))
    assert data.layout == "cars" and data.class_names[1] == "Acura RL Sedan 2012"
    assert data.train == [(str(tmp_path / "cars_train" / "00001.jpg"), 1), (str(tmp_path / "cars_train" / "00002.jpg"), 0)]
    assert data.test == [(str(tmp_path / "cars_test" / "00001.jpg"), 0)]


def test_stanford_cars_all_in_one_annotations(tmp_path):
    sio.savemat(tmp_path / "cars_annos.mat", {
        "class_names": np.array(["A", "B", "C"], dtype=object),
        "annotations": _structs(relative_im_path=["car_ims/000001.jpg", "car_ims/000002.jpg", "car_ims/000003.jpg"],
                                **{"class": [3, 1, 2]}, test=[0, 1, 0]),
    })
    data = load_dataset(str(tmp_path), "cars")
    assert [label for _, label in data.train] == [2, 1] and [label for _, label in data.test] == [0]
    assert data.test[0][0] == str(tmp_path / "car_ims" / "000002.jpg")


def test_stanford_dogs_lists_and_names_from_folders(tmp_path):
    os.makedirs(tmp_path / "lists")
    train = ["n02085620-Chihuahua/n02085620_1.jpg", "n02085782-Japanese_spaniel/n02085782_1.jpg"]
    sio.savemat(tmp_path / "lists" / "train_list.mat",
                {"file_list": np.array(train, dtype=object), "labels": np.array([1, 2])})
    sio.savemat(tmp_path / "lists" / "test_list.mat",
                {"file_list": np.array(["n02085782-Japanese_spaniel/n02085782_9.jpg"], dtype=object), "labels": np.array([2])})
    data = load_dataset(str(tmp_path))
    assert data.layout == "dogs" and data.class_names == ["Chihuahua", "Japanese_spaniel"]
    assert data.test == [(str(tmp_path / "Images" / "n02085782-Japanese_spaniel" / "n02085782_9.jpg"), 1)]


def test_missing_dogs_test_list_is_one_line_error(tmp_path):
    sio.savemat(tmp_path / "train_list.mat", {"file_list": np.array(["a-b/c.jpg"], dtype=object), "labels": np.array([1])})
    with pytest.raises(UserInputError, match="missing test_list.mat"):
        load_dataset(str(tmp_path))


def test_fgvc_aircraft_variants_with_spaces(tmp_path):
    data_dir = tmp_path / "fgvc-aircraft-2013b" / "data"
    os.makedirs(data_dir)
    (data_dir / "variants.txt").write_text("707-320\nCessna 172\nF/A-18\n")
    (data_dir / "images_variant_trainval.txt").write_text("1025794 707-320\n1340192 Cessna 172\n0056978 F/A-18\n")
    (data_dir / "images_variant_test.txt").write_text("1514522 Cessna 172\n")
    data = load_dataset(str(tmp_path))
    assert data.layout == "aircraft" and data.class_names == ["707-320", "Cessna 172", "F/A-18"]
    assert data.train[1] == (str(data_dir / "images" / "1340192.jpg"), 1)
    assert data.test == [(str(data_dir / "images" / "1514522.jpg"), 1)]


def test_oxford_flowers_train_is_trnid_plus_valid(tmp_path):
    sio.savemat(tmp_path / "imagelabels.mat", {"labels": np.array([[1, 2, 2, 1, 3]])})
    sio.savemat(tmp_path / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[3]]), "tstid": np.array([[4, 5]])})
    data = load_dataset(str(tmp_path))
    assert data.layout == "flowers102" and data.class_names == ["001", "002", "003"]
    assert [label for _, label in data.train] == [0, 1, 1]
    assert data.test == [(str(tmp_path / "jpg" / "image_00004.jpg"), 0), (str(tmp_path / "jpg" / "image_00005.jpg"), 2)]


def test_food11_flat_release_and_class_folders(tmp_path):
    _touch_images([str(tmp_path / "training" / name) for name in ("0_0.jpg", "10_3.jpg", "4_1.jpg")])
    _touch_images([str(tmp_path / "validation" / "2_0.jpg"), str(tmp_path / "evaluation" / "3_0.jpg")])
    data = load_dataset(str(tmp_path))
    assert data.layout == "food11" and len(data.class_names) == 11
    assert sorted(label for _, label in data.train) == [0, 4, 10]  # validation/ is not training data
    assert data.test == [(str(tmp_path / "evaluation" / "3_0.jpg"), 3)]
    other = tmp_path / "folders"
    _touch_images([str(other / "training" / "Rice" / "a.jpg"), str(other / "evaluation" / "Noodles-Pasta" / "b.jpg")])
    data = load_dataset(str(other), "food11")
    assert data.train[0][1] == 7 and data.test[0][1] == 6


def test_unknown_layout_names_what_was_looked_for(tmp_path):
    with pytest.raises(UserInputError, match="cannot tell the data set layout.*images.txt.*--dataset"):
        detect_layout(str(tmp_path))
    with pytest.raises(UserInputError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"))


def test_open_image_returns_none_for_unreadable_files(tmp_path, tiny):
    good = tmp_path / "good.png"
    tiny.tiny_image(0, 0, 16).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    assert open_image(str(good)).size == (16, 16)
    assert open_image(str(truncated)) is None
    assert open_image(str(text)) is None
    assert open_image(str(tmp_path / "missing.jpg")) is None
