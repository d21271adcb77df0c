"""The torch data pipeline: train transforms follow the model's resize, the eval transform is the deployment
Preprocess itself, unreadable images are dropped from batches with their index, epoch order depends on
(seed, epoch) only, and batch-dependent models are validated in one fixed shuffled order."""
import numpy as np
import torch

from fgvc_edge.datasets import load_dataset
from fgvc_edge.models import create_model
from fgvc_edge.train import data as train_data
from fgvc_edge.train.recipes import PAPER_RECIPES


def _epoch_order(loader, sampler, generator, seed, epoch):
    train_data.start_epoch(sampler, generator, seed, epoch)
    return list(iter(sampler))


def test_train_transform_follows_the_model_resize_and_the_recipe(tiny):
    cmal = create_model("cmal_resnet18", num_classes=3, input_size=64).config.preprocess  # Resize((78, 78)), crop 64
    transform = train_data.train_transform(cmal, PAPER_RECIPES["cmal"].augment)
    names = [type(t).__name__ for t in transform.transforms]
    assert names == ["Resize", "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert transform.transforms[0].size == (cmal.resize_size, cmal.resize_size) and transform.transforms[1].padding == 8
    out = transform(tiny.tiny_image(0, 0, 40))
    assert out.shape == (3, 64, 64) and -1.01 <= float(out.min()) and float(out.max()) <= 1.01  # mean = std = 0.5
    rbi = train_data.train_transform(create_model("rbi_mobilenet_v3_large", num_classes=3, input_size=32).config.preprocess,
                                     PAPER_RECIPES["rbi"].augment)
    assert [type(t).__name__ for t in rbi.transforms][1:4] == ["CenterCrop", "RandomHorizontalFlip", "RandomRotation"]


def test_eval_batches_are_the_deployment_preprocess(tiny_cub):
    data = load_dataset(str(tiny_cub))
    preprocess = create_model("resnet18", num_classes=3, input_size=32).config.preprocess
    batch = next(iter(train_data.eval_loader(data.test, preprocess, batch_size=4)))
    expected = np.stack([preprocess(path) for path, _ in data.test[:4]])
    assert np.array_equal(batch.images.numpy(), expected)
    assert batch.targets.tolist() == [label for _, label in data.test[:4]]


def test_unreadable_images_leave_the_batch_with_their_index(tmp_path, tiny):
    good = tmp_path / "good.png"
    tiny.tiny_image(1, 0, 16).save(good)
    (tmp_path / "bad.png").write_text("no")
    samples = [(str(good), 1), (str(tmp_path / "bad.png"), 0), (str(good), 2)]
    dataset = train_data.ImageDataset(samples, lambda image: torch.zeros(3, 4, 4), exif_transpose=False)
    batch = train_data.collate_skipping([dataset[i] for i in range(3)])
    assert len(batch) == 2 and batch.targets.tolist() == [1, 2] and batch.skipped == [1]
    assert train_data.collate_skipping([dataset[1]]).images is None


def test_epoch_order_depends_on_seed_and_epoch_only(tiny_cub):
    data = load_dataset(str(tiny_cub))
    preprocess = create_model("resnet18", num_classes=3, input_size=32).config.preprocess
    augment = PAPER_RECIPES["baseline"].augment
    first = train_data.train_loader(data.train, preprocess, augment, batch_size=4, seed=5)
    second = train_data.train_loader(data.train, preprocess, augment, batch_size=4, seed=5)
    assert _epoch_order(*first, 5, 3) == _epoch_order(*second, 5, 3)
    assert _epoch_order(*first, 5, 3) != _epoch_order(*first, 5, 4)
    shards = [train_data.train_loader(data.train, preprocess, augment, batch_size=4, seed=5, rank=r, world_size=2)
              for r in (0, 1)]
    orders = [_epoch_order(*shard, 5, 0) for shard in shards]
    assert sorted(orders[0] + orders[1]) == list(range(24))  # the two processes split the epoch


def test_batch_dependent_validation_order_is_shuffled_and_fixed(tiny_cub):
    data = load_dataset(str(tiny_cub))
    preprocess = create_model("resnet18", num_classes=3, input_size=32).config.preprocess
    plain = train_data.eval_loader(data.test, preprocess, batch_size=4)
    shuffled = train_data.eval_loader(data.test, preprocess, batch_size=4, shuffle_seed=0)
    assert list(plain.sampler) == list(range(12))
    assert sorted(shuffled.sampler) == list(range(12)) and list(shuffled.sampler) != list(range(12))
    labels = [[data.test[i][1] for i in list(shuffled.sampler)[k:k + 4]] for k in (0, 4, 8)]
    assert all(len(set(batch)) > 1 for batch in labels)  # no batch holds a single class
