"""hcmw clips as WebDataset tar shards (SPEC section 14): packing, reading, streaming.

``layout`` fixes what a shard and its index hold, ``pack`` writes them from the folder
layout, ``sources`` opens shards wherever they live, and ``hcmw_shards`` reads them as the
``hcmw_caption`` dataset under the same validation rules as the folders.
"""
