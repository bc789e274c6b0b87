"""The data layer: the official release read as it is published, and everything made from it.

* ``release``: the layout written down once (columns, splits, image packages, archive names, URLs, checksums);
* ``metadata``: the metadata CSV, validated, typed and streamed; per-CSV caches (labels, splits, barcode mask);
* ``builder``: the ``datasets`` builder (a config per image package plus ``dna``);
* ``image_package`` and ``zip_index``: images from the extracted folder or in place in the official zips;
* ``images``: batched JPEG decoding for training and evaluation loops;
* ``torch_dataset``: ``BIOSCAN5M``, the drop-in for bioscan-dataset's PyTorch dataset;
* ``download``, ``export`` (Hub Parquet), ``card`` (dataset card), ``summary``, ``synthetic`` (a synthetic
  release in the official layout), ``caching`` (where derived data is kept).
"""
