"""Torch data pipeline over the readers' (path, label) lists: transforms, skipping loaders, sharded sampling.

Evaluation transforms are the model's own :class:`~fgvc_edge.contract.preprocess.Preprocess` (numpy + PIL),
so the accuracy the trainer reports is computed on the exact tensors a deployed runner sees. Training
transforms resize the way that Preprocess does, then apply the recipe's random crop / flip / rotation.

An unreadable image yields ``None``; :func:`collate_skipping` drops it and counts it, so a corrupt file
costs one sample, never the epoch. The train sampler is torch's DistributedSampler (one replica when not
distributed) seeded per epoch, so the order of epoch e depends only on (seed, e) — what exact resume needs.
"""
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import transforms

from fgvc_edge.datasets import Sample, open_image
from fgvc_edge.errors import UserInputError
from fgvc_edge.contract.preprocess import Preprocess
from fgvc_edge.train.recipes import Augment

_INTERPOLATION = {
    "bilinear": transforms.InterpolationMode.BILINEAR,
    "bicubic": transforms.InterpolationMode.BICUBIC,
    "nearest": transforms.InterpolationMode.NEAREST,
}


class ImageDataset(Dataset):
    """(path, label) samples through ``transform``; item = (tensor, label, index), tensor None if unreadable.
    Images are turned upright by their EXIF orientation when the model's preprocessing says so."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Any], Any], exif_transpose: bool) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.exif_transpose = exif_transpose

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[Optional[torch.Tensor], int, int]:
        path, label = self.samples[index]
        image = open_image(path, exif_transpose=self.exif_transpose)
        if image is None:
            return None, label, index
        tensor = self.transform(image)
        if isinstance(tensor, np.ndarray):
            tensor = torch.from_numpy(tensor)
        return tensor, label, index


class Batch:
    """A collated batch; ``skipped`` holds the dataset indices of the images that could not be read."""

    def __init__(self, images: Optional[torch.Tensor], targets: Optional[torch.Tensor], skipped: List[int]) -> None:
        self.images, self.targets, self.skipped = images, targets, skipped

    def __len__(self) -> int:
        return 0 if self.targets is None else int(self.targets.shape[0])


def collate_skipping(items: List[Any]) -> Batch:
    good = [item for item in items if item[0] is not None]
    skipped = [item[2] for item in items if item[0] is None]
    if not good:
        return Batch(None, None, skipped)
    images = torch.stack([item[0] for item in good])
    targets = torch.tensor([item[1] for item in good], dtype=torch.long)
    return Batch(images, targets, skipped)


def train_transform(preprocess: Preprocess, augment: Augment) -> Callable[[Any], torch.Tensor]:
    """Resize as ``preprocess`` does, then the recipe's random crop (or the centre crop), flip, rotation."""
    size = preprocess.crop_size
    interpolation = _INTERPOLATION[preprocess.interpolation]
    if preprocess.resize_mode == "exact":
        resize = transforms.Resize((preprocess.resize_size, preprocess.resize_size), interpolation)
    else:
        resize = transforms.Resize(preprocess.resize_size, interpolation)
    steps: List[Any] = [resize]
    if augment.random_crop:
        steps.append(transforms.RandomCrop(size, padding=augment.crop_padding or None))
    else:
        steps.append(transforms.CenterCrop(size))
    if augment.hflip:
        steps.append(transforms.RandomHorizontalFlip())
    if augment.rotation_degrees:
        steps.append(transforms.RandomRotation(augment.rotation_degrees))
    steps += [transforms.ToTensor(), transforms.Normalize(preprocess.mean, preprocess.std)]
    return transforms.Compose(steps)


def train_loader(
    samples: Sequence[Sample],
    preprocess: Preprocess,
    augment: Augment,
    *,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
) -> Tuple[DataLoader, DistributedSampler, torch.Generator]:
    """Shuffled, sharded, last incomplete batch dropped (BatchNorm1d heads and RBI need full batches)."""
    dataset = ImageDataset(samples, train_transform(preprocess, augment), preprocess.exif_transpose)
    per_rank = len(dataset) // world_size
    if per_rank < batch_size:
        raise UserInputError(
            "batch size {} is larger than the {} training images per process; lower --batch-size".format(
                batch_size, per_rank
            )
        )
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
    # The loader's own generator seeds its workers; reseeded per epoch (see :func:`start_epoch`).
    generator = torch.Generator()
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_skipping,
        drop_last=True, generator=generator, persistent_workers=False, pin_memory=torch.cuda.is_available(),
    )
    return loader, sampler, generator


def start_epoch(sampler: DistributedSampler, generator: torch.Generator, seed: int, epoch: int) -> None:
    sampler.set_epoch(epoch)
    generator.manual_seed(seed * 100003 + epoch)


def eval_loader(
    samples: Sequence[Sample], preprocess: Preprocess, *, batch_size: int, rank: int = 0, world_size: int = 1,
    workers: int = 0, shuffle_seed: Optional[int] = None,
) -> DataLoader:
    """Every ``world_size``-th sample from ``rank`` with the deployment preprocessing, in file order — or in one
    fixed shuffled order (``shuffle_seed``) for a batch-dependent model, whose batch mates must not all share
    the class that a sorted file list gives them (RBI evaluates "on the shuffled validation set")."""
    dataset = ImageDataset(samples, preprocess, preprocess.exif_transpose)
    order = list(range(len(dataset)))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(dataset)).tolist()
    shard = order[rank::world_size]
    return DataLoader(dataset, batch_size=batch_size, sampler=shard, num_workers=workers, collate_fn=collate_skipping,
                      generator=torch.Generator().manual_seed(0))
