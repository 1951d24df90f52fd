"""``hcmw_caption`` read from shards (SPEC section 14): the same rows, checks and items as the folders.

:class:`HCMWShardDataset` gives random access by row for the feature dump and validation: rows
follow the index's clip order; every sample is decoded and checked once when the dataset is
built (each member's bytes against the SHA-256 the index keeps too), under the same
``on_error`` as the folders (a problem names the shard and the key).  The pattern must name
every shard the index lists, unless ``shard_subset``.  Under ``torchrun`` each rank checks a
share of the shards (shard ``i`` belongs to rank ``i % world``) and the ranks share what they
found, so all agree on the rows.  Items are read through a forward cursor: in-order access reads
each shard once, without holding more than one sample in memory.  A dump rank takes a contiguous
run of whole batches (:meth:`HCMWShardDataset.rows_of_rank`), so it opens only the shards
holding them.

:class:`HCMWShardStream` streams the train rows of a fold with WebDataset: shards split per
node and per worker, samples filtered by the fold in their JSON, shuffled through a seeded
buffer, ``ceil(train rows / world)`` samples per rank and epoch; a shard the check found cut
short is read up to its break.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import random
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import webdataset as wds
from torch.utils.data import IterableDataset
from webdataset.utils import pytorch_worker_info

from minigpt4.common import dist_utils
from minigpt4.datasets.datasets.clip_inputs import UnusableFile, check_image_bytes, open_rgb, vector_from_bytes
from minigpt4.datasets.datasets.hcmw_dataset import LABELS, NO_FOLD, TIME_COLUMNS, HCMWDataset, HCMWRow
from minigpt4.datasets.errors import SHOWN_IN_MESSAGE, BadClip, DataError
from minigpt4.datasets.shards.layout import IMAGE, META, VECTORS, member_digest
from minigpt4.datasets.shards.sources import ShardError, expand_pattern, index_location, iter_samples, read_index


@dataclass(frozen=True)
class ShardRow(HCMWRow):
    shard: int  # position of the shard in the expanded pattern
    key: str


def sample_problems(
    sample: Mapping, clip: str, dim: int, vector_kinds: list[str], digests: Mapping[str, str]
) -> tuple[dict | None, list[tuple[str, str]]]:
    """(the sample's JSON if usable, [(member, problem)]) under the folder layout's rules, and
    every member's bytes against its SHA-256 in the index (``digests``: suffix -> hex)."""
    problems = []
    for member in sorted(name for name in sample if not name.startswith("__")):
        if member not in digests:
            problems.append((member, "has no checksum in the index (added since packing?)"))
        elif member_digest(sample[member]) != digests[member]:
            problems.append(
                (member, "SHA-256 differs from the index: changed since packing; restore or repack the shard")
            )
    meta = None
    try:
        meta = json.loads(sample[META]) if META in sample else None
        if meta is None:
            problems.append((META, "missing"))
        elif not (isinstance(meta, dict) and isinstance(meta.get("clip"), str) and isinstance(meta.get("label"), str)
                  and isinstance(meta.get("fold"), int) and not isinstance(meta.get("fold"), bool)):
            problems.append((META, 'malformed: expected {"clip": str, "label": str, "fold": int}'))
            meta = None
    except ValueError as exc:
        problems.append((META, f"malformed JSON: {exc}"))
    if meta is not None and meta["clip"] != clip:
        problems.append((META, f"names clip {meta['clip']!r} but the index lists {clip!r} under this key"))
        meta = None
    if meta is not None and meta["label"] not in LABELS:
        problems.append((META, f"unknown mw_label {meta['label']!r}; expected MW or NonMW"))
    checks = [(IMAGE, check_image_bytes)]
    checks += [(VECTORS[kind], lambda data: vector_from_bytes(data, dim)) for kind in vector_kinds]
    for member, check in checks:
        if member not in sample:
            problems.append((member, "missing"))
            continue
        try:
            check(sample[member])
        except UnusableFile as exc:
            problems.append((member, str(exc)))
    return meta, problems


class ShardCursor:
    """Samples of one shard at a time, read forward: asking for an earlier sample reopens the shard."""

    def __init__(self):
        self.url: str | None = None
        self.samples: Iterator[dict] = iter(())
        self.position = -1

    def fetch(self, url: str, key: str, order: Mapping[str, int]) -> dict:
        if url != self.url or order[key] <= self.position:
            self.url, self.samples, self.position = url, iter_samples(url), -1
        for sample in self.samples:
            self.position = order.get(sample["__key__"], self.position)
            if sample["__key__"] == key:
                return sample
        self.url = None
        raise ShardError(f"{url}: no sample {key} (was the shard changed since the run checked it?)")


class HCMWShardDataset(HCMWDataset):
    """The rows of the shards ``shards`` (a brace pattern) in index order, checked like the folders."""

    def __init__(self, vis_processor, shards: str, shard_index: str = "", *, audio: bool, shard_subset: bool = False,
                 **options):
        """``audio``: read each sample's audio vector (the shards must hold them); else zeros.
        ``shard_subset``: ``shards`` may name only some of the shards the index lists."""
        self.pattern, self.shard_subset = shards, shard_subset
        self.shard_urls = expand_pattern(shards)
        self.index_url = index_location(self.shard_urls, shard_index)
        self.index = read_index(self.index_url)
        if audio and not self.index.get("audio"):
            raise ShardError(
                f"{self.index_url}: build_info.audio_dir is set but the shards hold no audio vectors; "
                "pack them with --audio_dir, or empty audio_dir"
            )
        self.vector_kinds = ["facemae", "videomae"] + (["audio"] if audio else [])
        self.entries = self._index_entries()
        self.key_order = [{key: i for i, key in enumerate(entry["keys"])} for entry in self.entries]
        self.problems: dict[str, list[BadClip]] = {}
        self.damaged_urls: set[str] = set()  # shards the check could not read to the end
        self.fold = NO_FOLD
        self._cursor: tuple[int, ShardCursor] | None = None  # (process id, cursor): never shared by a fork
        # no folders: rows, files and the audio stream all come from the shards
        super().__init__(
            vis_processor, self.index_url, "", "", facemae_dir="", videomae_dir="", audio_dir="", **options
        )

    def _index_entries(self) -> list[dict]:
        by_name = {entry["name"]: entry for entry in self.index["shards"]}
        entries = []
        for url in self.shard_urls:
            name = url.rstrip().rsplit("/", 1)[-1]
            if name not in by_name:
                raise ShardError(
                    f"{url}: shard {name!r} is not listed in {self.index_url}; pack the shards and their index together"
                )
            entries.append(by_name[name])
            if len(by_name[name].get("sha256") or []) != len(by_name[name]["keys"]):
                raise ShardError(f"{self.index_url}: shard {name!r} lacks a checksum per sample; pack the shards again")
        named = {entry["name"] for entry in entries}
        left_out = [name for name in by_name if name not in named]
        if left_out and not self.shard_subset:
            listed = ", ".join(left_out[:SHOWN_IN_MESSAGE]) + (", ..." if len(left_out) > SHOWN_IN_MESSAGE else "")
            raise ShardError(
                f"build_info.shards: {self.pattern!r} names {len(entries)} of the {len(by_name)} shards in "
                f"{self.index_url}; missing {listed}; name them all (the index's pattern is {self.index['pattern']}), "
                "or set build_info.shard_subset: true to read only these"
            )
        return entries

    # ---- rows and checks ------------------------------------------------------------------------
    def _read_rows(self) -> list[ShardRow]:
        """Check this rank's shards, share the findings, and list every row in index order."""
        rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
        found, problems, fatal, damaged = {}, [], [], []
        for number in range(rank, len(self.shard_urls), world):
            rows, bad, unlisted, readable = self._scan_shard(number)
            found.update(rows)
            problems += bad
            fatal += unlisted
            damaged += [] if readable else [self.shard_urls[number]]
        # shared before anything is raised: a rank raising alone would leave the others waiting
        for rows, bad, unlisted, cut_short in dist_utils.all_gather_object((found, problems, fatal, damaged)):
            found.update(rows)
            self.damaged_urls.update(cut_short)
            for problem in bad:
                self.problems.setdefault(problem.clip, []).append(problem)
            if unlisted:
                raise ShardError(
                    f"{unlisted[0]} is not listed in {self.index_url}; pack the shards and their index together"
                )
        rows = []
        for number, entry in enumerate(self.entries):
            for key, clip in zip(entry["keys"], entry["clips"]):
                # a sample with no usable JSON keeps its place; it is bad, and dropped or reported
                rows.append(found.get((number, key)) or ShardRow(clip, "", NO_FOLD, number, key))
        if len({row.clip for row in rows}) != len(rows):
            raise ShardError(f"{self.index_url}: a clip is listed more than once")
        return rows

    def _scan_shard(self, number: int) -> tuple[dict, list[BadClip], list[str], bool]:
        """(usable rows by (shard, key), problems, samples the index does not list, whether the
        shard reads to its end)."""
        url, entry = self.shard_urls[number], self.entries[number]
        clips = dict(zip(entry["keys"], entry["clips"]))
        digests = dict(zip(entry["keys"], entry["sha256"]))
        rows, problems, seen, readable = {}, [], set(), True
        try:
            for sample in iter_samples(url):
                key = sample["__key__"]
                if key not in clips:
                    return rows, problems, [f"{url}: key {key}"], readable
                seen.add(key)
                meta, bad = sample_problems(sample, clips[key], self.feature_dim, self.vector_kinds, digests[key])
                problems += [BadClip(clips[key], f"{url} key {key}.{member}", problem) for member, problem in bad]
                if meta is not None:
                    when = {column: meta.get(column) for column in TIME_COLUMNS}
                    rows[(number, key)] = ShardRow(meta["clip"], meta["label"], meta["fold"], number, key, **when)
            reason = "missing from the shard"
        except ShardError as exc:
            reason, readable = f"not read: {exc}", False
        problems += [BadClip(clip, f"{url} key {key}", reason) for key, clip in clips.items() if key not in seen]
        return rows, problems, [], readable

    def readable_samples(self, url: str) -> Iterator[dict]:
        """The samples of one shard in order.  A shard the check found cut short ends quietly
        where it breaks: the clips after the break were reported and left out (``on_error:
        skip``), so training goes on with the rest instead of failing mid-epoch."""
        try:
            yield from iter_samples(url)
        except ShardError:
            if url not in self.damaged_urls:
                raise

    def check_row(self, row: ShardRow) -> list[BadClip]:
        return self.problems.get(row.clip, [])

    def select(self, split: str, fold: int, vis_processor) -> "HCMWShardDataset":
        subset = super().select(split, fold, vis_processor)
        subset.fold, subset._cursor = fold, None
        return subset

    def rows_of_rank(self, rank: int, world: int, batch_size: int) -> list[int]:
        """Rank ``rank``'s share of a dump: a contiguous run of whole batches of ``batch_size``.

        Contiguous, so a rank reads a run of shards (sharing at most one at each end with its
        neighbours); whole batches of the one-process run, so every row is computed in the
        same batch, with the same numbers, however many ranks there are.
        """
        batches = math.ceil(len(self.rows) / batch_size)
        first, last = batches * rank // world, batches * (rank + 1) // world
        return list(range(first * batch_size, min(last * batch_size, len(self.rows))))

    # ---- items -----------------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        return dict(self.__dict__, _cursor=None)  # DataLoader workers open their own

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        if self._cursor is None or self._cursor[0] != os.getpid():
            self._cursor = (os.getpid(), ShardCursor())
        sample = self._cursor[1].fetch(self.shard_urls[row.shard], row.key, self.key_order[row.shard])
        return self.item_of(row, sample)

    def item_of(self, row: ShardRow, sample: Mapping) -> dict:
        vectors = [vector_from_bytes(sample[VECTORS[kind]], self.feature_dim) for kind in self.vector_kinds]
        if len(vectors) == 2:  # no audio in the shards: the third stream is zeros, as with the folders
            vectors.append(np.zeros(self.feature_dim, dtype=np.float32))
        return self._item(row, open_rgb(io.BytesIO(sample[IMAGE])), vectors)


class HCMWShardStream(IterableDataset):
    """The train rows of ``dataset`` (a ``train`` split of :class:`HCMWShardDataset`), streamed.

    ``shuffle_buffer`` 0 reads shards and samples in index order; above 0 the shard order and
    a buffer of that many samples are shuffled, seeded by :meth:`for_epoch` (same seed, same
    order).  Each rank reads the shards WebDataset's ``split_by_node`` gives it, each loader
    worker a share of those (``split_by_worker``); a rank whose shards run out before its
    share of the epoch reads them again.
    """

    def __init__(self, dataset: HCMWShardDataset, shuffle_buffer: int, seed: int = 0):
        if dataset.split != "train":
            raise ValueError(f"a shard stream serves train rows, not {dataset.split!r} ones")
        self.dataset = dataset
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rows_by_clip = {row.clip: row for row in dataset.rows}
        _, world, _, _ = pytorch_worker_info()  # what split_by_node reads: torchrun's RANK and WORLD_SIZE
        if world > len(dataset.shard_urls):
            raise DataError(
                f"{len(dataset.shard_urls)} shard(s) for {world} processes: every process needs at least one; "
                "pack with a smaller --shard_size"
            )

    def __len__(self) -> int:
        """Samples per rank and epoch: every rank takes the same number of steps."""
        _, world, _, _ = pytorch_worker_info()
        return math.ceil(len(self.rows_by_clip) / world)

    def for_epoch(self, seed: int) -> "HCMWShardStream":
        stream = copy.copy(self)
        stream.seed = seed
        return stream

    def _wanted(self, sample: dict) -> bool:
        """Not of the held-out fold, and not a clip the checks left out."""
        try:
            meta = json.loads(sample[META])
        except (KeyError, ValueError):  # a bad sample, already reported when the dataset was built
            return False
        if not isinstance(meta, dict):
            return False
        return meta.get("fold") != self.dataset.fold and meta.get("clip") in self.rows_by_clip

    def _item(self, sample: dict) -> dict:
        return self.dataset.item_of(self.rows_by_clip[json.loads(sample[META])["clip"]], sample)

    def _pipeline(self, data_pass: int, rank: int, worker: int) -> wds.DataPipeline:
        urls = list(self.dataset.shard_urls)
        if self.shuffle_buffer:
            random.Random(self.seed).shuffle(urls)  # the same on every rank: the split stays disjoint
        stages = [
            wds.SimpleShardList(urls), wds.split_by_node, wds.split_by_worker,
            lambda shards: (sample for shard in shards for sample in self.dataset.readable_samples(shard["url"])),
            wds.select(self._wanted),
        ]
        if self.shuffle_buffer:
            seed = int(np.random.SeedSequence([self.seed, rank, worker, data_pass]).generate_state(1)[0])
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=random.Random(seed)))
        # not wds.map: it would copy __key__ into the item
        return wds.DataPipeline(*stages, lambda samples: (self._item(sample) for sample in samples))

    def __iter__(self) -> Iterator[dict]:
        rank, world, worker, workers = pytorch_worker_info()
        per_rank = len(self)
        share = per_rank // workers + (worker < per_rank % workers)
        produced, data_pass = 0, 0
        while produced < share:
            before = produced
            for item in self._pipeline(data_pass, rank, worker):
                yield item
                produced += 1
                if produced == share:
                    return
            if produced == before:
                raise DataError(
                    f"rank {rank} worker {worker}: its shards hold no train clip of fold {self.dataset.fold}; "
                    "pack with a smaller --shard_size or use fewer loader workers"
                )
            data_pass += 1
