"""Readers for the standard fine-grained layouts, each as its own release ships it.

Every reader takes the folder the user points at (the release folder, or its parent where the release
unpacks into one named folder), returns :class:`DatasetSplits` with 0-based labels, and fails with one line
when an annotation file is missing. Images are not opened here: unreadable files are skipped and counted
by the loaders.

==================  ======================================================================================
layout              files read
==================  ======================================================================================
cub                 images.txt, train_test_split.txt, image_class_labels.txt, classes.txt, images/
cars                devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat,
                    cars_train/, cars_test/   — or the all-in-one cars_annos.mat + car_ims/
dogs                train_list.mat, test_list.mat (or lists/…), Images/
aircraft            data/images_variant_trainval.txt, data/images_variant_test.txt, data/variants.txt,
                    data/images/   (train = trainval, the split every paper reports)
flowers102          imagelabels.mat, setid.mat, jpg/   (train = trnid + valid, test = tstid)
food11              training/, evaluation/   (CMAL-Net Table 1: 9,866 train / 3,347 test, i.e. validation/
                    is not used); files ``<label>_<n>.jpg`` or one sub-folder per class
imagefolder         train/<class>/…, test/<class>/… (``val/`` when there is no ``test/``)
==================  ======================================================================================

Class folders: ``__MACOSX`` and dot folders (what archives and operating systems add) are skipped with a
note; any other class folder without an image in ``train/`` is refused, as torchvision's ImageFolder refuses
it, rather than becoming a class no image teaches. Only regular files are images.
"""
import os
from typing import Callable, Dict, List, Optional, Tuple

from fgvc_edge.datasets.base import (
    DatasetSplits,
    Sample,
    class_index,
    is_image_file,
    is_metadata_folder,
    list_images,
    load_mat,
    mat_field,
    need_file,
    parse_int,
    read_lines,
    read_rows,
)
from fgvc_edge.errors import UserInputError

# -- CUB-200-2011 ---------------------------------------------------------------------------------------


def detect_cub(root: str) -> Optional[str]:
    return _first_with(root, ("", "CUB_200_2011"), "images.txt")


def read_cub(root: str) -> DatasetSplits:
    layout = "CUB-200-2011"
    paths = {i: p for i, p in read_rows(need_file(root, "images.txt", layout), 2)}
    is_train = {i: f for i, f in read_rows(need_file(root, "train_test_split.txt", layout), 2)}
    labels = {i: c for i, c in read_rows(need_file(root, "image_class_labels.txt", layout), 2)}
    classes = read_rows(need_file(root, "classes.txt", layout), 2)
    # classes.txt: "1 001.Black_footed_Albatross" → label 0, name "Black_footed_Albatross".
    ids = [parse_int(i, "classes.txt") for i, _ in classes]
    names = [name.split(".", 1)[-1] for _, name in classes]
    order = {class_id: k for k, class_id in enumerate(ids)}
    train, test = [], []
    for image_id, rel in paths.items():
        if image_id not in is_train or image_id not in labels:
            raise UserInputError("{} data set at {}: image {} has no split or label".format(layout, root, image_id))
        label = order.get(parse_int(labels[image_id], "image_class_labels.txt"))
        if label is None:
            raise UserInputError("{}: image {} has a class not in classes.txt".format(layout, image_id))
        sample = (os.path.join(root, "images", rel), label)
        (train if is_train[image_id].strip() == "1" else test).append(sample)
    return DatasetSplits("cub", root, names, train, test)


# -- Stanford Cars ----------------------------------------------------------------------------------------


def detect_cars(root: str) -> Optional[str]:
    for sub in ("", "stanford_cars"):
        base = os.path.join(root, sub)
        if os.path.exists(os.path.join(base, "cars_annos.mat")) or os.path.exists(
            os.path.join(base, "devkit", "cars_meta.mat")
        ):
            return base
    return None


def read_cars(root: str) -> DatasetSplits:
    if os.path.exists(os.path.join(root, "cars_annos.mat")):
        return _read_cars_all_in_one(root)
    layout = "Stanford Cars"
    meta_path = need_file(root, os.path.join("devkit", "cars_meta.mat"), layout)
    names = [str(n) for n in mat_field(load_mat(meta_path), "class_names", meta_path)]
    train = _cars_split(root, need_file(root, os.path.join("devkit", "cars_train_annos.mat"), layout), "cars_train")
    test_annos = "cars_test_annos_withlabels.mat"
    if not os.path.exists(os.path.join(root, test_annos)):
        test_annos = os.path.join("devkit", test_annos)
    test = _cars_split(root, need_file(root, test_annos, layout), "cars_test")
    return DatasetSplits("cars", root, names, train, test)


def _cars_split(root: str, annos_path: str, folder: str) -> List[Sample]:
    annotations = mat_field(load_mat(annos_path), "annotations", annos_path)
    # "class" is 1-based; "fname" is relative to cars_train/ or cars_test/.
    classes, files = mat_field(annotations, "class", annos_path), mat_field(annotations, "fname", annos_path)
    return [(os.path.join(root, folder, str(f)), int(c) - 1) for c, f in zip(_as_list(classes), _as_list(files))]


def _read_cars_all_in_one(root: str) -> DatasetSplits:
    path = os.path.join(root, "cars_annos.mat")
    mat = load_mat(path)
    names = [str(n) for n in mat_field(mat, "class_names", path)]
    annotations = mat_field(mat, "annotations", path)
    rels = _as_list(mat_field(annotations, "relative_im_path", path))
    classes = _as_list(mat_field(annotations, "class", path))
    test_flags = _as_list(mat_field(annotations, "test", path))
    train, test = [], []
    for rel, label, flag in zip(rels, classes, test_flags):
        (test if int(flag) else train).append((os.path.join(root, str(rel)), int(label) - 1))
    return DatasetSplits("cars", root, names, train, test)


# -- Stanford Dogs ----------------------------------------------------------------------------------------


def detect_dogs(root: str) -> Optional[str]:
    for sub in ("", "lists"):
        if os.path.exists(os.path.join(root, sub, "train_list.mat")):
            return root
    return None


def read_dogs(root: str) -> DatasetSplits:
    layout = "Stanford Dogs"
    lists = "lists" if os.path.isdir(os.path.join(root, "lists")) else ""
    train_path = need_file(root, os.path.join(lists, "train_list.mat"), layout)
    test_path = need_file(root, os.path.join(lists, "test_list.mat"), layout)
    train_files, train_labels = _dogs_list(train_path)
    test_files, test_labels = _dogs_list(test_path)
    # Class names from the folder names, "n02085620-Chihuahua" → "Chihuahua", in label order.
    names: Dict[int, str] = {}
    for rel, label in zip(train_files + test_files, train_labels + test_labels):
        names.setdefault(label, rel.replace("\\", "/").split("/")[0].split("-", 1)[-1])
    class_names = [names.get(k, str(k)) for k in range(max(names) + 1)]
    images = os.path.join(root, "Images")
    return DatasetSplits(
        "dogs",
        root,
        class_names,
        [(os.path.join(images, f), c) for f, c in zip(train_files, train_labels)],
        [(os.path.join(images, f), c) for f, c in zip(test_files, test_labels)],
    )


def _dogs_list(path: str) -> Tuple[List[str], List[int]]:
    mat = load_mat(path)
    files = [str(f) for f in _as_list(mat_field(mat, "file_list", path))]
    labels = [int(c) - 1 for c in _as_list(mat_field(mat, "labels", path))]
    if len(files) != len(labels):
        raise UserInputError("{}: {} files but {} labels".format(path, len(files), len(labels)))
    return files, labels


# -- FGVC-Aircraft ----------------------------------------------------------------------------------------


def detect_aircraft(root: str) -> Optional[str]:
    return _first_with(root, ("", "data", os.path.join("fgvc-aircraft-2013b", "data")), "images_variant_trainval.txt")


def read_aircraft(root: str) -> DatasetSplits:
    layout = "FGVC-Aircraft"
    names = [line.strip() for line in read_lines(need_file(root, "variants.txt", layout)) if line.strip()]
    index = class_index(names)
    splits = []
    for split in ("trainval", "test"):
        samples = []
        for image_id, variant in read_rows(need_file(root, "images_variant_{}.txt".format(split), layout), 2):
            if variant not in index:
                raise UserInputError(
                    "{}: variant {!r} of image {} is not in variants.txt".format(layout, variant, image_id)
                )
            samples.append((os.path.join(root, "images", image_id + ".jpg"), index[variant]))
        splits.append(samples)
    return DatasetSplits("aircraft", root, names, splits[0], splits[1])


# -- Oxford Flowers-102 -----------------------------------------------------------------------------------


def detect_flowers(root: str) -> Optional[str]:
    return _first_with(root, ("", "flowers-102", "flowers102"), "imagelabels.mat")


def read_flowers(root: str) -> DatasetSplits:
    layout = "Oxford Flowers-102"
    labels_path = need_file(root, "imagelabels.mat", layout)
    split_path = need_file(root, "setid.mat", layout)
    labels = [int(c) - 1 for c in _as_list(mat_field(load_mat(labels_path), "labels", labels_path))]
    setid = load_mat(split_path)

    def samples(key: str) -> List[Sample]:
        # Image ids are 1-based: id 1 is jpg/image_00001.jpg with labels[0].
        ids = [int(i) for i in _as_list(mat_field(setid, key, split_path))]
        return [(os.path.join(root, "jpg", "image_{:05d}.jpg".format(i)), labels[i - 1]) for i in ids]

    # The release names no classes; labels 1..102 become "001".."102".
    names = ["{:03d}".format(k + 1) for k in range(max(labels) + 1)]
    return DatasetSplits("flowers102", root, names, samples("trnid") + samples("valid"), samples("tstid"),
                         notes=["Flowers-102 ships no class names; classes are named by their label 001-102"])


# -- Food-11 ----------------------------------------------------------------------------------------------

# Food-11 (Singla et al., MADiMa 2016): the 11 categories in label order 0..10.
FOOD11_CLASSES = [
    "Bread", "Dairy product", "Dessert", "Egg", "Fried food", "Meat",
    "Noodles-Pasta", "Rice", "Seafood", "Soup", "Vegetable-Fruit",
]


def detect_food11(root: str) -> Optional[str]:
    for sub in ("", "food-11", "Food-11"):
        base = os.path.join(root, sub)
        if os.path.isdir(os.path.join(base, "training")) and os.path.isdir(os.path.join(base, "evaluation")):
            return base
    return None


def read_food11(root: str) -> DatasetSplits:
    layout = "Food-11"
    train = _food11_split(need_file(root, "training", layout))
    test = _food11_split(need_file(root, "evaluation", layout))
    return DatasetSplits("food11", root, list(FOOD11_CLASSES), train, test)


def _food11_split(folder: str) -> List[Sample]:
    subfolders = _class_folders(folder)
    if subfolders:
        # Re-packaged releases: one folder per class, named by label ("0".."10") or by name.
        samples = []
        for sub in subfolders:
            label = _food11_label(sub, folder)
            samples += [(path, label) for path in list_images(os.path.join(folder, sub))]
        return samples
    # The original release: flat files "<label>_<n>.jpg".
    return [(path, _food11_label(os.path.basename(path).split("_", 1)[0], folder)) for path in list_images(folder)]


def _food11_label(token: str, where: str) -> int:
    if token.isdigit() and int(token) < len(FOOD11_CLASSES):
        return int(token)
    normalised = {n.lower().replace("-", "/"): i for i, n in enumerate(FOOD11_CLASSES)}
    normalised.update({n.lower(): i for i, n in enumerate(FOOD11_CLASSES)})
    key = token.lower().replace("_", " ")
    if key in normalised:
        return normalised[key]
    raise UserInputError("Food-11 at {}: cannot tell the class of {!r}".format(where, token))


# -- generic ImageFolder ----------------------------------------------------------------------------------


def detect_imagefolder(root: str) -> Optional[str]:
    if os.path.isdir(os.path.join(root, "train")) and (
        os.path.isdir(os.path.join(root, "test")) or os.path.isdir(os.path.join(root, "val"))
    ):
        return root
    return None


def read_imagefolder(root: str) -> DatasetSplits:
    layout = "ImageFolder"
    train_dir = need_file(root, "train", layout)
    test_name = "test" if os.path.isdir(os.path.join(root, "test")) else "val"
    test_dir = need_file(root, test_name, layout)
    names = _class_folders(train_dir)
    if not names:
        raise UserInputError("{} data set at {}: train/ has no class folders".format(layout, root))
    extra = sorted(set(_class_folders(test_dir)) - set(names))
    if extra:
        raise UserInputError("{}/{} has classes that train/ lacks: {}".format(root, test_name, ", ".join(extra[:5])))
    train, test = _folder_samples(train_dir, names), _folder_samples(test_dir, names)
    present = {label for _, label in train}
    empty = [name for label, name in enumerate(names) if label not in present]
    if empty:
        raise UserInputError("{} data set at {}: class folder(s) {} in train/ hold no image; remove them or add "
                             "images".format(layout, root, ", ".join(empty[:5])))
    skipped = sorted({d for folder in (train_dir, test_dir) for d in os.listdir(folder)
                      if is_metadata_folder(d) and os.path.isdir(os.path.join(folder, d))})
    notes = ["skipped folder(s) {}: archive/system metadata, not classes".format(", ".join(skipped))] if skipped else []
    return DatasetSplits("imagefolder", root, names, train, test, notes=notes)


def _class_folders(folder: str) -> List[str]:
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not is_metadata_folder(d))


def _folder_samples(folder: str, names: List[str]) -> List[Sample]:
    samples = []
    for label, name in enumerate(names):
        class_dir = os.path.join(folder, name)
        if not os.path.isdir(class_dir):
            continue
        for dirpath, dirnames, files in os.walk(class_dir):
            dirnames.sort()
            dirnames[:] = [d for d in dirnames if not is_metadata_folder(d)]
            paths = (os.path.join(dirpath, f) for f in sorted(files))
            samples += [(path, label) for path in paths if is_image_file(path)]
    return samples


# -- registry ---------------------------------------------------------------------------------------------

Detector = Callable[[str], Optional[str]]
Reader = Callable[[str], DatasetSplits]
# Detection order: the most specific annotation files first, the bare folder layout last.
LAYOUTS: Dict[str, Tuple[Detector, Reader]] = {
    "cub": (detect_cub, read_cub),
    "cars": (detect_cars, read_cars),
    "dogs": (detect_dogs, read_dogs),
    "aircraft": (detect_aircraft, read_aircraft),
    "flowers102": (detect_flowers, read_flowers),
    "food11": (detect_food11, read_food11),
    "imagefolder": (detect_imagefolder, read_imagefolder),
}


def _first_with(root: str, subfolders: Tuple[str, ...], marker: str) -> Optional[str]:
    for sub in subfolders:
        base = os.path.join(root, sub) if sub else root
        if os.path.exists(os.path.join(base, marker)):
            return base
    return None


def _as_list(value: object) -> list:
    # scipy squeezes a 1-element array to a scalar; a 1-image split must still be a list.
    if hasattr(value, "tolist"):
        value = value.tolist()  # type: ignore[union-attr]
    return value if isinstance(value, list) else [value]
